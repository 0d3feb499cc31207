-- A number may ask a webhook what to do with each call (Twilio-like
-- triage at call start): an http(s) URL the daemon POSTs the call's
-- details to, signed; the JSON answer picks stream, forward or reject.
ALTER TABLE numbers ADD COLUMN voice_webhook TEXT;
