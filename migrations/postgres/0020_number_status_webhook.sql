-- Status callbacks for inbound calls (issue 16): where a number's calls'
-- status changes are POSTed, written as its webhook_format says.
ALTER TABLE numbers ADD COLUMN status_webhook TEXT;
