-- Numbers an account may claim itself (JSON array of E.164 numbers and
-- prefix patterns an admin granted it). Outside them only an admin token
-- assigns numbers to the account.
ALTER TABLE accounts ADD COLUMN number_ranges TEXT NOT NULL DEFAULT '[]';
