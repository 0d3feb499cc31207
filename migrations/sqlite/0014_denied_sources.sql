-- Networks whose SIP the gateway drops before the parse (and, with the
-- XDP guard, in the kernel): operator entries made over REST. `network`
-- is a canonical CIDR; times are Unix milliseconds; no expiry: NULL.
CREATE TABLE denied_sources (
    id         TEXT PRIMARY KEY NOT NULL,
    network    TEXT NOT NULL UNIQUE,
    reason     TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
