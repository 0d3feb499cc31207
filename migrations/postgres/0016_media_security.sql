-- SRTP policy (issue 13): 'rtp', 'srtp' or 'srtp-optional' per trunk and
-- per number; whether a trunk may carry SDES keys over cleartext
-- signalling; and, per call, how each leg's media was protected (JSON:
-- {"caller": "srtp:AES_CM_128_HMAC_SHA1_80", "far": "rtp"}).
ALTER TABLE trunks ADD COLUMN media_security TEXT NOT NULL DEFAULT 'srtp-optional';
ALTER TABLE trunks ADD COLUMN srtp_cleartext_keying BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE numbers ADD COLUMN media_security TEXT NOT NULL DEFAULT 'srtp-optional';
ALTER TABLE calls ADD COLUMN media_security TEXT;
