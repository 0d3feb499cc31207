-- Call recordings (issue 16): one row per WAV file a node wrote.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    path TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX recordings_account ON recordings (account_id, created_at DESC, id DESC);
