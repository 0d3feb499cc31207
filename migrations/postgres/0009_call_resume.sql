-- What a node needs to take a live call back after a restart (its dialogs
-- and relay ports, as JSON the daemon owns), while the call lasts. A
-- node resumes only its own rows (`node`); rows of ended calls are ignored
-- and swept. Calls with a row here are not closed as `interrupted` when a
-- node starts.
CREATE TABLE call_resume (
    call_id  TEXT PRIMARY KEY,
    node     TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    saved_at BIGINT NOT NULL
);
CREATE INDEX call_resume_node ON call_resume (node);
