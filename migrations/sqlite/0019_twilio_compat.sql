-- Twilio drop-in (issue 16): how a number's voice webhook requests are
-- written ('json', the gateway's own, or 'twilio' form fields signed with
-- X-Twilio-Signature), and each account's auth token (Twilio's: the key
-- of that signature and the password of the Twilio-compatible REST API).
-- The token is kept as is: HMAC signing needs the key itself.
ALTER TABLE numbers ADD COLUMN webhook_format TEXT NOT NULL DEFAULT 'json';
ALTER TABLE accounts ADD COLUMN auth_token TEXT;
