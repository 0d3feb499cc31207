//! SMS over SIP (RFC 3428 MESSAGE): a text message a trunk sends to one of
//! our numbers is accepted with 202, stored, POSTed to the number's SMS
//! webhook and told to the AI of every live stream call on that number.

use super::*;
use crate::core::legs::CallState;
use crate::core::legs::OutTarget;
use crate::routing::normalize_e164;
use api::control::{MessageRequest, OriginateRefused};
use domain::model::{Direction, MessageRecord};
use media_userspace::aistream::SmsIn;

/// Largest SMS body we take (RFC 3428 §7: a MESSAGE over UDP stays under
/// 1300 bytes; bigger bodies need a congestion-controlled transport).
pub const MAX_SMS_BYTES: usize = 1300;

impl Core {
    /// A MESSAGE outside a dialog from an admitted source.
    pub(super) fn on_message(&mut self, now: Instant, id: TxnId, _peer: Peer) {
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
                    && c.media_leg == c.handle.own_leg()
                    && c.pending.is_none()
            })
            .map(|c| c.media_leg)
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

/// An SMS on its way out, until its MESSAGE is answered.
#[derive(Debug)]
pub struct SmsOut {
    pub id: String,
    pub target: OutTarget,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub body: String,
    pub auth_tried: bool,
}

impl Core {
    /// Sends an SMS through a trunk as a MESSAGE (RFC 3428); its record
    /// is queued now and its status follows from the response.
    pub fn send_sms(
        &mut self,
        now: Instant,
        req: &MessageRequest,
    ) -> Result<MessageRecord, OriginateRefused> {
        let crate::core::legs::OutboundRoute { host, target, .. } =
            self.outbound_route(now, &req.account, &req.from, &req.to, req.trunk.as_deref())?;
        let record = MessageRecord {
            id: format!("SM{}", self.random_hex(16)),
            account_id: req.account.clone(),
            direction: Direction::Outbound,
            from_number: req.from.clone(),
            to_number: req.to.clone(),
            body: req.body.clone(),
            status: "queued".into(),
            created_at: self.unix_ms(now),
        };
        let tag = self.new_tag();
        let local_host = self.local_host(target.peer.local);
        let m: SmsHandle = self.new_id();
        let out = SmsOut {
            id: record.id.clone(),
            from: format!("<sip:{}@{local_host}>;tag={tag}", req.from),
            to: format!("<sip:{}@{host}>", req.to),
            call_id: format!("{}@{local_host}", self.random_hex(12)),
            cseq: 1,
            body: req.body.clone(),
            auth_tried: false,
            target,
        };
        self.sms_out.insert(m, out);
        self.out.push_back(Output::SmsQueued(record.clone()));
        self.send_sms_request(now, m, None);
        Ok(record)
    }

    fn send_sms_request(&mut self, now: Instant, m: SmsHandle, auth: Option<(HeaderName, String)>) {
        let Some(peer) = self.sms_out.get(&m).map(|o| o.target.peer) else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(o) = self.sms_out.get(&m) else {
            return;
        };
        let mut b = MessageBuilder::request(&Method::Message, &o.target.uri)
            .header(HeaderName::Via, via)
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, o.from.as_str())
            .header(HeaderName::To, o.to.as_str())
            .header(HeaderName::CallId, o.call_id.as_str())
            .header(HeaderName::CSeq, format!("{} MESSAGE", o.cseq))
            .header(HeaderName::UserAgent, server);
        if let Some((name, value)) = auth {
            b = b.header(name, value);
        }
        let b = b.body(
            "text/plain;charset=UTF-8",
            Bytes::from(o.body.clone().into_bytes()),
        );
        let bytes = Bytes::from(b.encode());
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Message(m));
    }

    /// The final response to our MESSAGE.
    pub(super) fn on_sms_response(&mut self, now: Instant, m: SmsHandle, resp: Response) {
        let status = resp.status;
        if status < 200 {
            return;
        }
        if status < 300 {
            if let Some(o) = self.sms_out.remove(&m) {
                self.out.push_back(Output::SmsStatus {
                    id: o.id,
                    status: "sent",
                    sip_status: status,
                });
            }
            return;
        }
        let cnonce = self.random_hex(8);
        if let Some(o) = self.sms_out.get_mut(&m)
            && !o.auth_tried
            && let Some(auth) = super::forward::digest_answer(&resp, &o.target, "MESSAGE", &cnonce)
        {
            o.auth_tried = true;
            o.cseq += 1;
            return self.send_sms_request(now, m, Some(auth));
        }
        self.sms_failed(m, status);
    }

    /// Our MESSAGE failed with `status` (408: no answer at all).
    pub(super) fn sms_failed(&mut self, m: SmsHandle, status: u16) {
        if let Some(o) = self.sms_out.remove(&m) {
            tracing::info!(message = %o.id, status, "SMS not delivered");
            self.out.push_back(Output::SmsStatus {
                id: o.id,
                status: "failed",
                sip_status: status,
            });
        }
    }
}
