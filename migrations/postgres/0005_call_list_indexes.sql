-- The REST API's call listings filter an account's calls by called or
-- calling number, or to the calls in progress, newest first: each gets an
-- index that serves the filter and the order, so a page costs the same
-- with a hundred calls or millions (bench/scripts/api.sh).
CREATE INDEX calls_account_to ON calls (account_id, to_number, invite_at, id);
CREATE INDEX calls_account_from ON calls (account_id, from_number, invite_at, id);
CREATE INDEX calls_account_open ON calls (account_id, invite_at, id) WHERE end_at IS NULL;
