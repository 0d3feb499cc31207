//! SMS over SIP (RFC 3428 MESSAGE): a text message a trunk sends to one of
//! our numbers is accepted with 202, stored, POSTed to the number's SMS
//! webhook and told to the AI of every live stream call on that number.

use super::call::CallState;
use super::*;
use crate::routing::normalize_e164;
use api::store::{Direction, MessageRecord};
use media_userspace::aistream::SmsIn;

/// Largest SMS body we take (RFC 3428 §7: a MESSAGE over UDP stays under
/// 1300 bytes; bigger bodies need a congestion-controlled transport).
pub const MAX_SMS_BYTES: usize = 1300;

impl Core {
    /// A MESSAGE outside a dialog from an admitted source.
    pub(super) fn on_message(&mut self, now: Instant, id: u64, _peer: Peer) {
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        let routing = self.routing.clone();
        let dialed_raw = req
            .uri
            .user
            .clone()
            .or_else(|| req.core.to.uri.user.clone())
            .unwrap_or_default();
        let Some(number) =
            normalize_e164(&dialed_raw).and_then(|d| routing.number(&d).cloned().map(|n| (d, n)))
        else {
            self.metrics.reject("not_found");
            return self.reply(now, id, 404, None);
        };
        let (to, number) = number;
        let from_raw = req.core.from.uri.user.clone().unwrap_or_default();
        let from = normalize_e164(&from_raw).unwrap_or(from_raw);
        if routing.is_blocked(&number.account_id, &number.pattern, &from) {
            self.metrics.reject("blocked");
            return self.reply(now, id, 603, None);
        }
        let ctype = req.content_type().unwrap_or("text/plain");
        let mt = ctype.split(';').next().unwrap_or("").trim();
        if !mt.eq_ignore_ascii_case("text/plain") {
            self.metrics.reject("unsupported_media");
            return self.reply_with(now, id, 415, |b| b.header(HeaderName::Accept, "text/plain"));
        }
        if req.body.len() > MAX_SMS_BYTES {
            self.metrics.reject("oversized");
            return self.reply(now, id, 513, None);
        }
        let Ok(body) = std::str::from_utf8(&req.body) else {
            self.metrics.reject("malformed");
            return self.reply(now, id, 400, Some("Bad Request (body is not UTF-8)"));
        };
        let record = MessageRecord {
            id: format!("SM{}", self.random_hex(16)),
            account_id: number.account_id.clone(),
            direction: Direction::Inbound,
            from_number: from.clone(),
            to_number: to.clone(),
            body: body.to_string(),
            status: "received".into(),
            created_at: self.unix_ms(now),
        };
        self.reply(now, id, 202, None);
        // Live stream calls on this number hear of it.
        let legs: Vec<u64> = self
            .calls
            .values()
            .filter(|c| {
                c.number_pattern.as_deref() == Some(number.pattern.as_str())
                    && c.state != CallState::AwaitingMedia
                    && c.bridge.is_none()
                    && c.media_leg == c.handle
                    && c.pending.is_none()
            })
            .map(|c| c.handle)
            .collect();
        for leg in legs {
            self.out.push_back(Output::Media(MediaCommand::Sms {
                leg,
                sms: SmsIn {
                    message_sid: record.id.clone(),
                    from: record.from_number.clone(),
                    to: record.to_number.clone(),
                    body: record.body.clone(),
                },
            }));
        }
        self.out.push_back(Output::SmsReceived {
            record,
            webhook: number.sms_webhook.clone(),
        });
    }
}
