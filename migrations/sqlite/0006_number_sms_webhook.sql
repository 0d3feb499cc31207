-- Where a number's inbound SMS (SIP MESSAGE) are POSTed, signed and
-- retried, as `message.received` events.
ALTER TABLE numbers ADD COLUMN sms_webhook TEXT;
