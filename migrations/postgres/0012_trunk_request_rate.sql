-- SIP requests per second a trunk's source networks may send, together
-- (its token bucket before the parse; a burst of twice the rate). NULL:
-- no limit (a carrier is trusted; its traffic still has its own queue).
ALTER TABLE trunks ADD COLUMN requests_per_sec BIGINT;
