-- Idempotency-Key of POSTs that create calls or messages, shared by every
-- node on this database: a retry sent to another node still finds the
-- first answer. `status` and `body` stay NULL while the first request is
-- in flight. Keys older than 24 h are reused.
CREATE TABLE idempotency_keys (
    account_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    body        TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
