-- CDR events the database refused for good (a data exception or a
-- constraint, SQLSTATE classes 22 and 23), kept row by row so that one bad
-- event never blocks the queue behind it. `event` is the event as text,
-- control characters escaped; an operator can read and replay it.
CREATE TABLE cdr_dead_letters (
    seq BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL,
    event TEXT NOT NULL,
    error TEXT NOT NULL,
    at BIGINT NOT NULL
);
