-- Where a call goes when its route fails before an answer: the far leg of a
-- forwarded call is busy, unanswered or failing, or a stream call's AI
-- cannot be reached. A SIP URI or SIP username, reached like a forward
-- target (through the number's trunk).
ALTER TABLE numbers ADD COLUMN fallback TEXT;
