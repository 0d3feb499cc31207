-- CDR events the database refused for good (a constraint or a value it
-- cannot store), kept row by row so that one bad event never blocks the
-- queue behind it. `event` is the event as text, control characters
-- escaped; an operator can read and replay it.
CREATE TABLE cdr_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    event TEXT NOT NULL,
    error TEXT NOT NULL,
    at BIGINT NOT NULL
);
