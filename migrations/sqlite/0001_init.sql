-- Initial schema (SQLite). Times are Unix milliseconds (UTC) in BIGINT
-- columns. Keep in step with ../postgres/0001_init.sql: both backends run
-- the same queries (api/src/store/common.rs).

CREATE TABLE accounts (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
);

CREATE TABLE trunks (
    name             TEXT PRIMARY KEY NOT NULL,
    -- JSON array of CIDR strings.
    source_cidrs     TEXT NOT NULL DEFAULT '[]',
    outbound_address TEXT,
    transport        TEXT NOT NULL,
    username         TEXT,
    password         TEXT,
    max_calls        BIGINT
);

CREATE TABLE numbers (
    pattern    TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    route      TEXT NOT NULL,
    target     TEXT,
    dialect    TEXT,
    params     TEXT,
    trunk      TEXT,
    max_calls  BIGINT
);
CREATE INDEX numbers_account ON numbers (account_id);

CREATE TABLE blocked_numbers (
    id             TEXT PRIMARY KEY NOT NULL,
    account_id     TEXT NOT NULL,
    number_pattern TEXT,
    caller_pattern TEXT NOT NULL
);
CREATE INDEX blocked_numbers_account ON blocked_numbers (account_id);

CREATE TABLE sip_users (
    username   TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    realm      TEXT NOT NULL,
    ha1_md5    TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL
);

CREATE TABLE registrations (
    username   TEXT NOT NULL,
    contact    TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    source     TEXT NOT NULL,
    transport  TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    cseq       BIGINT NOT NULL,
    PRIMARY KEY (username, contact)
);
CREATE INDEX registrations_expires ON registrations (expires_at);

CREATE TABLE calls (
    id          TEXT PRIMARY KEY NOT NULL,
    account_id  TEXT,
    direction   TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number   TEXT NOT NULL,
    trunk       TEXT,
    sip_call_id TEXT NOT NULL,
    invite_at   BIGINT NOT NULL,
    answer_at   BIGINT,
    end_at      BIGINT,
    end_cause   TEXT,
    sip_status  INTEGER,
    duration_ms BIGINT,
    media_mode  TEXT NOT NULL
);
-- Listings are newest first, paged by (invite_at, id).
CREATE INDEX calls_account_invite ON calls (account_id, invite_at, id);
CREATE INDEX calls_invite ON calls (invite_at, id);
-- Calls in progress (active listings, close_interrupted_calls).
CREATE INDEX calls_open ON calls (invite_at) WHERE end_at IS NULL;

CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    account_id  TEXT NOT NULL,
    direction   TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number   TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX messages_account_created ON messages (account_id, created_at, id);
