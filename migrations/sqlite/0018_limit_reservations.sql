-- Cluster-wide concurrent-call limits (issue 14): one row per live call
-- and limited scope ('number:<pattern>', 'trunk:<name>') it counts
-- against, inserted by the node that admits the call only while the
-- scope's rows are fewer than its limit (serialised per scope), deleted
-- when the call ends; a lost node's rows go with its calls. Times are
-- Unix milliseconds.
CREATE TABLE limit_reservations (
    call_id TEXT NOT NULL,
    scope   TEXT NOT NULL,
    node    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (call_id, scope)
);
CREATE INDEX limit_reservations_scope ON limit_reservations (scope);
CREATE INDEX limit_reservations_node ON limit_reservations (node);
