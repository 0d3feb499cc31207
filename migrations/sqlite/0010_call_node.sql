-- The node that handles each call (`store.node_id`): a node starting up
-- closes only its own calls left open (and rows from before this column),
-- never the live calls of the other nodes sharing the database.
ALTER TABLE calls ADD COLUMN node TEXT;
CREATE INDEX calls_open_by_node ON calls (node) WHERE end_at IS NULL;
