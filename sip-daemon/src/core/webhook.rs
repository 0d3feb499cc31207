//! Webhooks from the core's side: a number's voice webhook picks the route
//! of each call at its start (Twilio-like triage), and a call's status
//! changes go to its status webhook. The HTTP itself happens at the edge
//! (`daemon/hooks.rs`, `api::webhook`): the core emits [`Output::VoiceWebhook`]
//! and is told the answer by [`Core::handle_voice_answer`].

use super::negotiation::leg_media;
use super::*;
use crate::core::legs::CallState;
use api::webhook::{StatusEvent, VoiceAnswer, VoiceRequest};
use domain::model::{Number, RouteKind};
use media_userspace::control::{LegMedia, LegMode};

/// Why a voice webhook gave call no route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// Unreachable, too slow, an error status or an unreadable answer:
    /// `[webhooks] voice_on_failure` decides.
    Failed(String),
    /// A TwiML answer asking for what the gateway does not carry out: the
    /// call is refused (500, cause `twiml_unsupported`), never half run.
    Refused(String),
}

/// What the voice webhook of `call` (parked as `pending`) is told.
pub(super) fn voice_request(call: &Call, pending: &PendingRoute) -> VoiceRequest {
    VoiceRequest {
        event: "voice",
        call_id: call.sid.clone(),
        account: pending.number.account_id.clone(),
        from: pending.caller.clone(),
        to: pending.dialed.clone(),
        number: pending.number.pattern.clone(),
        trunk: call.trunk.clone(),
        sip_call_id: pending.sip_call_id.clone(),
        dial_call_status: None,
        format: pending.number.webhook_format,
        method: api::twiml::Method::Post,
        direction: if call.outbound {
            "outbound-api"
        } else {
            "inbound"
        },
        call_status: if call.answered_at.is_some() {
            "in-progress"
        } else {
            "ringing"
        },
    }
}

impl Core {
    /// Parks call `h` and asks the number's webhook what to do with it.
    pub(super) fn ask_voice_webhook(&mut self, h: CallHandle, url: String, pending: PendingRoute) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let request = voice_request(call, &pending);
        call.pending = Some(Box::new(pending));
        self.out.push_back(Output::VoiceWebhook {
            call: h,
            url,
            request,
        });
    }

    /// The voice webhook of call `h` answered (or failed: the error says
    /// why, and the configured fallback applies).
    pub fn handle_voice_answer(
        &mut self,
        now: Instant,
        h: CallHandle,
        answer: Result<VoiceAnswer, NoRoute>,
    ) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let answered = call.answered_at.is_some();
        let Some(pending) = call.pending.take() else {
            // The caller hung up meanwhile.
            return;
        };
        if answered {
            // An answered call's TwiML (Twilio's Calls API `Url`, or an
            // update of a live call): only TwiML goes on; the JSON actions
            // are for calls ringing.
            let live = call.twiml.as_ref().is_some_and(|t| t.live);
            return match answer {
                Ok(VoiceAnswer::Twiml(verbs)) => self.start_twiml(now, h, pending, verbs),
                // A live call's redirect that fails leaves the AI the call.
                other if live => {
                    tracing::warn!(call = h.get(), answer = ?other.err(), "live call's TwiML not fetched; the call goes on");
                    call.twiml = None;
                }
                other => {
                    tracing::warn!(call = h.get(), answer = ?other.err(), "outbound call's TwiML not fetched");
                    self.hangup(now, h, "webhook_failed")
                }
            };
        }
        let number = pending.number.clone();
        let route = match answer {
            Ok(VoiceAnswer::Stream {
                url,
                dialect,
                params,
            }) => Number {
                route: RouteKind::Stream,
                target: Some(url),
                dialect,
                params: params.map(|m| serde_json::Value::Object(m).to_string()),
                ..number
            },
            Ok(VoiceAnswer::Forward { to }) => {
                let target = if to.starts_with("sip:") {
                    to
                } else {
                    let to = crate::routing::normalize_e164(&to).unwrap_or(to);
                    // A number goes out through the number's trunk.
                    let host = number
                        .trunk
                        .as_deref()
                        .and_then(|t| self.routing.trunk(t))
                        .and_then(|t| t.trunk.outbound_address.clone());
                    match host {
                        Some(host) => format!("sip:{to}@{}", host.trim_start_matches("sip:")),
                        None => {
                            return self.refuse_parked(now, h, 480, "route_unavailable");
                        }
                    }
                };
                Number {
                    route: RouteKind::Forward,
                    target: Some(target),
                    ..number
                }
            }
            Ok(VoiceAnswer::Reject { status }) => {
                return self.refuse_parked(now, h, status.unwrap_or(603), "webhook_rejected");
            }
            Ok(VoiceAnswer::Hangup {}) => {
                return self.refuse_parked(now, h, 603, "webhook_rejected");
            }
            Ok(VoiceAnswer::Twiml(verbs)) => {
                return self.start_twiml(now, h, pending, verbs);
            }
            Err(NoRoute::Refused(why)) => {
                let sid = self
                    .calls
                    .get(&h)
                    .map(|c| c.sid.clone())
                    .unwrap_or_default();
                tracing::warn!(call = %sid, %why, "voice webhook's TwiML refused");
                return self.refuse_parked(now, h, 500, "twiml_unsupported");
            }
            Err(NoRoute::Failed(why)) => {
                tracing::warn!(call = h.get(), %why, "voice webhook failed");
                if !self.cfg.voice_fallback_to_route {
                    return self.refuse_parked(now, h, 503, "webhook_failed");
                }
                number
            }
        };
        self.start_route(now, h, &route, &pending);
    }

    /// Refuses a call still waiting for its route.
    pub(super) fn refuse_parked(&mut self, now: Instant, h: CallHandle, status: u16, cause: &str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if let Some(txn) = call.invite_txn {
            let tag = call.dialog.key.local_tag.clone();
            self.metrics.reject(cause);
            self.respond(now, txn, status, None, Some(&tag), |b| b);
        }
        self.end_call(now, h, cause, status);
    }

    /// Opens call `h`'s media as `number`'s route says.
    pub(super) fn start_route(
        &mut self,
        now: Instant,
        h: CallHandle,
        number: &Number,
        p: &PendingRoute,
    ) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if call.state != CallState::AwaitingMedia {
            return;
        }
        let media = call.negotiated.as_ref().map(leg_media).unwrap_or(LegMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            ptime_ms: 20,
            remote: None,
            send: true,
            srtp: None,
        });
        let has_offer = call.offer.is_some();
        let sid = call.sid.clone();
        let mode = match number.route {
            RouteKind::Echo => LegMode::Echo,
            RouteKind::Stream => {
                let Some(url) = number.target.as_deref() else {
                    return self.refuse_parked(now, h, 480, "route_unavailable");
                };
                let spec =
                    self.stream_spec(url, number, &sid, &p.caller, &p.dialed, &p.sip_call_id);
                if let Some(c) = self.calls.get_mut(&h) {
                    c.stream_wait = Some(now + self.cfg.stream.answer_timeout);
                }
                self.schedule_call(h);
                LegMode::Stream(Box::new(spec))
            }
            RouteKind::Forward => {
                if !has_offer {
                    return self.refuse_parked(now, h, 488, "offer_required");
                }
                return match self.resolve_forward(now, number) {
                    Ok(target) => self.open_forward(h, target, &p.caller, p.max_forwards),
                    Err(why) => {
                        tracing::info!(why, "webhook's forward target unavailable");
                        self.refuse_parked(now, h, 480, "route_unavailable")
                    }
                };
            }
        };
        self.open_media_leg(h, mode, media);
    }

    /// Tells call `h`'s status webhook (if any) that it is now `status`.
    pub(super) fn status_changed(&mut self, now: Instant, h: CallHandle, status: &str) {
        let at = self.unix_ms(now);
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if let Some((url, event)) = next_status(call, status, at) {
            self.out.push_back(Output::StatusWebhook { url, event });
        }
    }
}

/// Call `call`'s next status event (without the final details) and where
/// it goes, if it has a status webhook.
pub(super) fn next_status(call: &mut Call, status: &str, at: i64) -> Option<(String, StatusEvent)> {
    let mut event = status_event(call, status, at);
    let hook = call.status_webhook.as_mut().filter(|h| h.wants(status))?;
    event.format = hook.format;
    event.account = hook.account.clone();
    event.sequence = hook.sent;
    hook.sent += 1;
    Some((hook.url.clone(), event))
}

/// A status event for `call`, without the final details.
fn status_event(call: &Call, status: &str, at: i64) -> StatusEvent {
    let (local, remote) = (
        uri_user(&call.dialog.local_uri),
        uri_user(&call.dialog.remote_uri),
    );
    let (from, to) = if call.outbound {
        (local, remote)
    } else {
        (remote, local)
    };
    StatusEvent {
        event: "call.status",
        call_id: call.sid.clone(),
        status: status.to_string(),
        direction: if call.outbound { "outbound" } else { "inbound" }.into(),
        from,
        to,
        at,
        sip_status: None,
        end_cause: None,
        duration_ms: None,
        format: Default::default(),
        account: String::new(),
        sequence: 0,
    }
}
