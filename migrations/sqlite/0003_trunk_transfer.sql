-- How calls that came in on this trunk are transferred: "bridge" (the
-- gateway places the new leg and relays media, the default) or "refer"
-- (REFER to the carrier, which connects the caller itself and frees us).
ALTER TABLE trunks ADD COLUMN transfer TEXT;
