-- The gateway nodes sharing this database (issue 14): each records itself
-- at start and on every heartbeat. `api_address` is where the other nodes
-- reach its REST API (live-call actions are carried out by the node that
-- holds the call); times are Unix milliseconds. `drain_requested` is set by
-- POST /v1/nodes/{id}/drain on any node and read by the node itself on its
-- next heartbeat; a new start of the node clears it.
CREATE TABLE nodes (
    id              TEXT PRIMARY KEY NOT NULL,
    api_address     TEXT,
    version         TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    heartbeat_at    BIGINT NOT NULL,
    calls_active    BIGINT NOT NULL DEFAULT 0,
    draining        BOOLEAN NOT NULL DEFAULT FALSE,
    drain_requested BOOLEAN NOT NULL DEFAULT FALSE
);
