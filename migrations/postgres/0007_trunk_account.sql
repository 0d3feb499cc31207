-- A trunk may belong to one account: only that account's outbound calls,
-- SMS and numbers may use it (its carrier contract and credentials). NULL:
-- shared by every account (the operator's own trunks).
ALTER TABLE trunks ADD COLUMN account_id TEXT;
