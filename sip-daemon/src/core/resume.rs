//! Bridged calls that survive a restart of the daemon.
//!
//! While a relayed call is bridged and stable (both dialogs confirmed, no
//! transfer, hold or re-INVITE under way), the core keeps a snapshot of it
//! in the store ([`CdrEvent::Resumable`]): both dialogs (RFC 3261 §12:
//! identifiers, route sets, remote targets, CSeq spaces), the negotiated
//! streams and the relay's two local ports. The next run of this node
//! restores such calls ([`Core::restore`]): the dialogs answer in-dialog
//! requests again (a BYE from either party reaches the other and closes
//! the record normally) and the relay is adopted on the same ports
//! ([`MediaCommand::AdoptRelay`]), in the kernel without a gap when its
//! XDP rules were pinned. A listen-only stream (fork) is not restored.
//!
//! Snapshots are taken by a periodic pass that compares a cheap
//! fingerprint of each bridged call with the one saved, so no code path
//! that changes a call has to remember to save it.

use super::dialog::{Dialog, DialogKey};
use super::negotiation::leg_media;
use super::*;
use crate::core::legs::{Call, CallState, SessionTimer, StatusHook};
use crate::core::legs::{OutLeg, OutState, OutTarget};
use crate::sip::Uri;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::{self, NegotiatedAudio};
use domain::model::ResumableCall;
use serde::{Deserialize, Serialize};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Format of the snapshot; a run refuses snapshots of another version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// How often bridged calls are checked for a changed snapshot.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A bridged call as the store keeps it for the next run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    pub version: u32,
    pub sid: String,
    pub answered_at_ms: i64,
    pub number_pattern: Option<String>,
    pub trunk: Option<String>,
    pub route_trunk: Option<String>,
    pub callee_user: Option<String>,
    pub outbound: bool,
    pub click_to_call: bool,
    pub status_webhook: Option<String>,
    /// How its status events are written, for whom, and how many were
    /// sent (absent in snapshots of earlier runs: JSON).
    #[serde(default)]
    pub status_format: domain::model::WebhookFormat,
    #[serde(default)]
    pub status_account: String,
    #[serde(default)]
    pub status_sent: u32,
    #[serde(default)]
    pub status_events: Vec<String>,
    /// Codecs the call may use, by encoding name.
    pub codecs: Vec<String>,
    /// RFC 4028: (interval, whether we refresh).
    pub session: Option<(u32, bool)>,
    pub caller: CallerSide,
    pub far: FarSide,
}

/// The call's own (first) dialog: with the caller, or with the callee of
/// a call we placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallerSide {
    pub dialog: DialogSnapshot,
    pub media: MediaSnapshot,
    /// Their SDP (offer or answer) and ours.
    pub remote_sdp: Option<String>,
    pub local_sdp: Option<String>,
}

/// The far leg the call is bridged to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarSide {
    pub dialog: DialogSnapshot,
    pub media: MediaSnapshot,
    pub target_uri: String,
    pub target_transport: String,
    pub target_local: SocketAddr,
    pub target_remote: SocketAddr,
    pub via_trunk: bool,
    pub from: String,
    pub to: String,
    pub contact: String,
    pub max_forwards: u32,
    /// CSeq of the INVITE that made the dialog.
    pub cseq: u32,
    /// Our SDP toward the far side, the codecs it offered, its o= version.
    pub offer: Option<String>,
    pub offered: Vec<String>,
    pub sdp_version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DialogSnapshot {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    pub local_uri: String,
    pub remote_uri: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    pub transport: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A negotiated stream and the relay port that carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaSnapshot {
    pub local_port: u16,
    pub codec: String,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    pub ptime: u32,
    pub remote: Option<SocketAddr>,
    pub direction: String,
}

/// Why a stored snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot is not valid JSON of this version: {0}")]
    Format(String),
    #[error("snapshot version {0}, this run reads {SNAPSHOT_VERSION}")]
    Version(u32),
    #[error("snapshot field {0} is invalid")]
    Field(&'static str),
    #[error("snapshot is of another call ({0})")]
    OtherCall(String),
    #[error("a dialog of the snapshot belongs to a call already restored")]
    DialogTaken,
}

fn codec_named(s: &str) -> Option<Codec> {
    Codec::ALL.into_iter().find(|c| c.encoding_name() == s)
}

impl DialogSnapshot {
    fn of(d: &Dialog) -> DialogSnapshot {
        DialogSnapshot {
            call_id: d.key.call_id.clone(),
            local_tag: d.key.local_tag.clone(),
            remote_tag: d.key.remote_tag.clone(),
            local_uri: d.local_uri.clone(),
            remote_uri: d.remote_uri.clone(),
            remote_target: d.remote_target.to_string(),
            route_set: d.route_set.clone(),
            local_cseq: d.local_cseq,
            remote_cseq: d.remote_cseq,
            transport: d.peer.transport.label().to_string(),
            local: d.peer.local,
            remote: d.peer.remote,
        }
    }

    /// The dialog again. Our CSeq moves on by a margin: requests we sent
    /// after the snapshot was taken must not be repeated (§12.2.1.1).
    fn dialog(&self) -> Result<Dialog, RestoreError> {
        let remote_target =
            Uri::parse(&self.remote_target).map_err(|_| RestoreError::Field("remote_target"))?;
        Ok(Dialog {
            secure: remote_target.scheme == crate::sip::uri::Scheme::Sips,
            key: DialogKey {
                call_id: self.call_id.clone(),
                local_tag: self.local_tag.clone(),
                remote_tag: self.remote_tag.clone(),
            },
            local_uri: self.local_uri.clone(),
            remote_uri: self.remote_uri.clone(),
            remote_target,
            route_set: self.route_set.clone(),
            local_cseq: self.local_cseq.saturating_add(CSEQ_MARGIN) & 0x7fff_ffff,
            remote_cseq: self.remote_cseq,
            peer: Peer {
                transport: TransportKind::from_label(&self.transport)
                    .ok_or(RestoreError::Field("transport"))?,
                local: self.local,
                remote: self.remote,
                conn: None,
            },
        })
    }
}

/// How far our CSeq jumps at restore (more than a call sends in the
/// snapshot interval).
const CSEQ_MARGIN: u32 = 100;

impl MediaSnapshot {
    fn of(n: &NegotiatedAudio, local: SocketAddr) -> MediaSnapshot {
        MediaSnapshot {
            local_port: local.port(),
            codec: n.codec.encoding_name().to_string(),
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
            ptime: n.ptime,
            remote: n.remote,
            direction: n.direction.as_str().to_string(),
        }
    }

    fn negotiated(&self) -> Result<NegotiatedAudio, RestoreError> {
        Ok(NegotiatedAudio {
            remote: self.remote,
            codec: codec_named(&self.codec).ok_or(RestoreError::Field("codec"))?,
            payload_type: self.payload_type,
            telephone_event: self.telephone_event,
            ptime: self.ptime,
            direction: sdp::Direction::parse(&self.direction)
                .ok_or(RestoreError::Field("direction"))?,
            // Only plain RTP calls are kept resumable.
            srtp: None,
        })
    }
}

fn parse_sdp(
    s: &Option<String>,
    field: &'static str,
) -> Result<Option<SessionDescription>, RestoreError> {
    s.as_deref()
        .map(|s| SessionDescription::parse(s.as_bytes()).map_err(|_| RestoreError::Field(field)))
        .transpose()
}

impl CallSnapshot {
    /// Parses a stored snapshot of call `id`.
    pub fn parse(id: &str, json: &str) -> Result<CallSnapshot, RestoreError> {
        let s: CallSnapshot =
            serde_json::from_str(json).map_err(|e| RestoreError::Format(e.to_string()))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version(s.version));
        }
        if s.sid != id {
            return Err(RestoreError::OtherCall(s.sid));
        }
        Ok(s)
    }
}

impl Core {
    /// The bridged call `h` and its far leg, when both are in a state a
    /// restart can pick up: confirmed, bridged, nothing under way.
    fn stable_bridge(&self, h: CallHandle) -> Option<(&Call, &OutLeg)> {
        let c = self.calls.get(&h)?;
        let hb = c.bridge?;
        let o = self.out_legs.get(&hb)?;
        let calm = c.state == CallState::Confirmed
            && c.transfer.is_none()
            && c.reinvite_out.is_none()
            && c.reinvite_txn.is_none()
            && c.ok.is_none()
            && c.refer_until.is_none()
            && !c.caller_left
            && c.pending.is_none()
            && c.local_media.is_some()
            && c.negotiated.is_some()
            && o.state == OutState::Confirmed
            && o.partner == Some(h)
            && o.rebridge.is_none()
            && o.transfer_of.is_none()
            && o.reinvite_out.is_none()
            && o.ok.is_none()
            && !o.replaces_caller
            && o.dialog.is_some()
            && o.local_media.is_some()
            && o.negotiated.is_some()
            // SRTP keys are not written to the store: such calls end
            // with the run that holds their keys, and no SDP the snapshot
            // keeps may carry a key (an ignored offer's, or ours).
            && c.negotiated.as_ref().is_some_and(|n| n.srtp.is_none())
            && o.negotiated.as_ref().is_some_and(|n| n.srtp.is_none())
            && !c.offer.iter().chain(&c.local_sdp).any(|s| s.media.iter().any(|m| !m.crypto.is_empty()))
            && !o.offer.as_deref().is_some_and(|t| t.contains("a=crypto:"));
        calm.then_some((c, o))
    }

    /// Changes whenever anything a snapshot holds may have changed: every
    /// in-dialog request moves a CSeq, a transfer changes the far leg.
    fn fingerprint(c: &Call, o: &OutLeg) -> u64 {
        let mut s = DefaultHasher::new();
        (c.bridge, c.media_leg, o.media_leg).hash(&mut s);
        (c.dialog.local_cseq, c.dialog.remote_cseq).hash(&mut s);
        if let Some(d) = &o.dialog {
            (d.local_cseq, d.remote_cseq).hash(&mut s);
        }
        (o.cseq, o.sdp_version, c.local_media, o.local_media).hash(&mut s);
        s.finish()
    }

    fn snapshot(&self, c: &Call, o: &OutLeg, now: Instant) -> Option<CallSnapshot> {
        let od = o.dialog.as_ref()?;
        Some(CallSnapshot {
            version: SNAPSHOT_VERSION,
            sid: c.sid.clone(),
            answered_at_ms: self.unix_ms(c.answered_at.unwrap_or(now)),
            number_pattern: c.number_pattern.clone(),
            trunk: c.trunk.clone(),
            route_trunk: c.route_trunk.clone(),
            callee_user: c.callee_user.clone(),
            outbound: c.outbound,
            click_to_call: c.click_to_call,
            status_webhook: c.status_webhook.as_ref().map(|s| s.url.clone()),
            status_format: c
                .status_webhook
                .as_ref()
                .map(|s| s.format)
                .unwrap_or_default(),
            status_account: c
                .status_webhook
                .as_ref()
                .map(|s| s.account.clone())
                .unwrap_or_default(),
            status_sent: c.status_webhook.as_ref().map_or(0, |s| s.sent),
            status_events: c
                .status_webhook
                .as_ref()
                .map(|s| s.events.clone())
                .unwrap_or_default(),
            codecs: c
                .codecs
                .iter()
                .map(|k| k.encoding_name().to_string())
                .collect(),
            session: c.session.map(|s| (s.interval, s.we_refresh)),
            caller: CallerSide {
                dialog: DialogSnapshot::of(&c.dialog),
                media: MediaSnapshot::of(c.negotiated.as_ref()?, c.local_media?),
                remote_sdp: c.offer.as_ref().map(SessionDescription::encode),
                local_sdp: c.local_sdp.as_ref().map(SessionDescription::encode),
            },
            far: FarSide {
                dialog: DialogSnapshot::of(od),
                media: MediaSnapshot::of(o.negotiated.as_ref()?, o.local_media?),
                target_uri: o.target.uri.to_string(),
                target_transport: o.target.peer.transport.label().to_string(),
                target_local: o.target.peer.local,
                target_remote: o.target.peer.remote,
                via_trunk: o.target.via_trunk,
                from: o.from.clone(),
                to: o.to.clone(),
                contact: o.contact.clone(),
                max_forwards: o.max_forwards,
                cseq: o.cseq,
                offer: o.offer.clone(),
                offered: o
                    .offered
                    .iter()
                    .map(|k| k.encoding_name().to_string())
                    .collect(),
                sdp_version: o.sdp_version,
            },
        })
    }

    /// The periodic pass: saves the snapshot of every bridged call whose
    /// fingerprint moved, and withdraws those of calls mid-change.
    pub(super) fn save_snapshots(&mut self, now: Instant) {
        let Some(node) = self.cfg.resume_node.clone() else {
            return;
        };
        let at = self.unix_ms(now);
        let bridged: Vec<CallHandle> = self
            .calls
            .values()
            .filter(|c| c.bridge.is_some() || self.resumable.contains_key(&c.handle))
            .map(|c| c.handle)
            .collect();
        for h in bridged {
            let Some((c, o)) = self.stable_bridge(h) else {
                if self.resumable.remove(&h).is_some()
                    && let Some(c) = self.calls.get(&h)
                {
                    let id = c.sid.clone();
                    self.out
                        .push_back(Output::Cdr(CdrEvent::NotResumable { id }));
                }
                continue;
            };
            let fp = Self::fingerprint(c, o);
            if self.resumable.get(&h) == Some(&fp) {
                continue;
            }
            let Some(snap) = self.snapshot(c, o, now) else {
                continue;
            };
            let Ok(snapshot) = serde_json::to_string(&snap) else {
                continue;
            };
            self.resumable.insert(h, fp);
            self.out.push_back(Output::Cdr(CdrEvent::Resumable {
                id: snap.sid,
                node: node.clone(),
                snapshot,
                at,
            }));
        }
    }

    /// A hand-over to the next run (SIGUSR2): saves every snapshot that
    /// changed now; returns how many calls the next run will take back.
    /// Those calls no longer hold the drain ([`Core::calls_to_drain`]).
    pub fn hand_over(&mut self, now: Instant) -> usize {
        self.handing_over = true;
        self.save_snapshots(now);
        self.resumable.len()
    }

    pub fn is_handing_over(&self) -> bool {
        self.handing_over
    }

    /// Calls a drain waits for: all of them, or during a hand-over those
    /// the next run will not take back.
    pub fn calls_to_drain(&self) -> usize {
        if self.handing_over {
            self.calls.len() - self.resumable.len().min(self.calls.len())
        } else {
            self.calls.len()
        }
    }

    /// The end of a drain: hangs up the calls it waited for (during a
    /// hand-over, the resumable ones are left to the next run).
    pub fn hangup_drained(&mut self, now: Instant, cause: &str) {
        let handles: Vec<CallHandle> = self
            .calls
            .keys()
            .copied()
            .filter(|h| !(self.handing_over && self.resumable.contains_key(h)))
            .collect();
        for h in handles {
            self.hangup(now, h, cause);
        }
    }

    /// A call that ends is no longer resumable.
    pub(super) fn forget_snapshot(&mut self, h: CallHandle, sid: &str) {
        if self.resumable.remove(&h).is_some() {
            self.out.push_back(Output::Cdr(CdrEvent::NotResumable {
                id: sid.to_string(),
            }));
        }
    }

    /// Takes back the calls a previous run of this node left resumable:
    /// their dialogs answer again and their relays are adopted (answered
    /// with [`MediaEvent::RelayOpened`], or `Failed`, which hangs the call
    /// up). Returns the calls that could not be restored, with why: the
    /// caller withdraws them ([`CdrEvent::NotResumable`]) for the store to
    /// close.
    pub fn restore(
        &mut self,
        now: Instant,
        calls: Vec<ResumableCall>,
    ) -> Vec<(String, RestoreError)> {
        let mut failed = Vec::new();
        for rc in calls {
            let restored = CallSnapshot::parse(&rc.id, &rc.snapshot)
                .and_then(|snap| self.restore_one(now, &snap));
            match restored {
                Ok(h) => {
                    let fp = self
                        .stable_bridge(h)
                        .map_or(0, |(c, o)| Self::fingerprint(c, o));
                    self.resumable.insert(h, fp);
                }
                Err(e) => failed.push((rc.id, e)),
            }
        }
        self.metrics.calls_active.set(self.calls.len() as i64);
        failed
    }

    fn restore_one(&mut self, now: Instant, s: &CallSnapshot) -> Result<CallHandle, RestoreError> {
        let codecs: Vec<Codec> = s.codecs.iter().filter_map(|n| codec_named(n)).collect();
        let caller_dialog = s.caller.dialog.dialog()?;
        let far_dialog = s.far.dialog.dialog()?;
        if caller_dialog.key == far_dialog.key
            || self.dialogs.contains_key(&caller_dialog.key)
            || self.dialogs.contains_key(&far_dialog.key)
        {
            return Err(RestoreError::DialogTaken);
        }
        let ports = [s.caller.media.local_port, s.far.media.local_port];
        if ports[0] == 0 || ports[1] == 0 || ports[0] == ports[1] {
            return Err(RestoreError::Field("media.local_port"));
        }
        let caller_media = s.caller.media.negotiated()?;
        let far_media = s.far.media.negotiated()?;
        let offer = parse_sdp(&s.caller.remote_sdp, "caller.remote_sdp")?;
        let local_sdp = parse_sdp(&s.caller.local_sdp, "caller.local_sdp")?;
        let target_uri =
            Uri::parse(&s.far.target_uri).map_err(|_| RestoreError::Field("far.target_uri"))?;
        let target_transport = TransportKind::from_label(&s.far.target_transport)
            .ok_or(RestoreError::Field("far.target_transport"))?;
        let offered: Vec<Codec> = s
            .far
            .offered
            .iter()
            .filter_map(|n| codec_named(n))
            .collect();
        // Trunk passwords stay in the trunk's row, not in the snapshot.
        let credentials = s
            .route_trunk
            .as_deref()
            .filter(|_| s.far.via_trunk)
            .and_then(|t| self.routing.trunk(t))
            .and_then(|t| t.trunk.username.clone().zip(t.trunk.password.clone()));
        let elapsed = Duration::from_millis(
            u64::try_from(self.unix_ms(now).saturating_sub(s.answered_at_ms)).unwrap_or(0),
        );
        let answered_at = now.checked_sub(elapsed).unwrap_or(now);
        let ip = self.cfg.advertised_ip;
        let (local_a, local_b) = (
            SocketAddr::new(ip, s.caller.media.local_port),
            SocketAddr::new(ip, s.far.media.local_port),
        );
        let h: CallHandle = self.new_id();
        let hb: OutLegHandle = self.new_id();
        let media = [leg_media(&caller_media), leg_media(&far_media)];
        self.dialogs
            .insert(caller_dialog.key.clone(), DialogOwner::Call(h));
        self.dialogs
            .insert(far_dialog.key.clone(), DialogOwner::OutLeg(hb));
        let far = OutLeg {
            partner: Some(h),
            state: OutState::Confirmed,
            target: OutTarget {
                uri: target_uri,
                peer: Peer {
                    transport: target_transport,
                    local: s.far.target_local,
                    remote: s.far.target_remote,
                    conn: None,
                },
                credentials,
                via_trunk: s.far.via_trunk,
                media_security: domain::model::MediaSecurity::Rtp,
                cleartext_keying: false,
            },
            call_id: far_dialog.key.call_id.clone(),
            local_tag: far_dialog.key.local_tag.clone(),
            from: s.far.from.clone(),
            to: s.far.to.clone(),
            contact: s.far.contact.clone(),
            max_forwards: s.far.max_forwards,
            cseq: s.far.cseq,
            via: String::new(),
            invite_txn: None,
            offer: s.far.offer.clone(),
            offered,
            auth_tried: false,
            redirects: 0,
            referred: false,
            provisional: false,
            cancel_due: false,
            ring_deadline: None,
            ring_timeout: None,
            dialog: Some(far_dialog),
            ack: None,
            local_media: Some(local_b),
            negotiated: Some(far_media),
            ringing_sent: true,
            media_leg: hb.own_leg(),
            transfer_of: None,
            reinvite_out: None,
            reinvite_ack: None,
            rebridge: None,
            replaces_caller: false,
            rebridge_local: None,
            sdp_version: s.far.sdp_version,
            ok: None,
            keying: LegKeying::plain(),
        };
        self.out_legs.insert(hb, far);
        if let Some(p) = &s.number_pattern {
            *self.active_by_number.entry(p.clone()).or_default() += 1;
        }
        if let Some(t) = &s.trunk {
            *self.active_by_trunk.entry(t.clone()).or_default() += 1;
        }
        self.calls.insert(
            h,
            Call {
                handle: h,
                sid: s.sid.clone(),
                state: CallState::Confirmed,
                invite_txn: None,
                dialog: caller_dialog,
                number_pattern: s.number_pattern.clone(),
                trunk: s.trunk.clone(),
                media_open: true,
                offer,
                local_sdp,
                negotiated: Some(caller_media),
                invite_at: answered_at,
                answered_at: Some(answered_at),
                ok: None,
                ack_offer_pending: false,
                session: s
                    .session
                    .map(|(interval, we)| SessionTimer::start(now, interval, we)),
                reinvite_txn: None,
                callee_user: s.callee_user.clone(),
                codecs,
                stream_wait: None,
                local_media: Some(local_a),
                bridge: Some(hb),
                transfer: None,
                reinvite_out: None,
                reinvite_ack: None,
                fallback: None,
                media_leg: h.own_leg(),
                route_trunk: s.route_trunk.clone(),
                refer_until: None,
                outbound: s.outbound,
                origination: None,
                pending: None,
                twiml: None,
                ai_stream: None,
                admission: None,
                // A resumed call keeps the slots its first run reserved.
                reserved: self.cfg.cluster_limits,
                status_webhook: s.status_webhook.clone().map(|url| StatusHook {
                    url,
                    format: s.status_format,
                    account: s.status_account.clone(),
                    sent: s.status_sent,
                    events: s.status_events.clone(),
                }),
                click_to_call: s.click_to_call,
                forked: None,
                caller_left: false,
                keying: LegKeying::plain(),
            },
        );
        self.restoring.insert(h);
        self.schedule_call(h);
        self.out.push_back(Output::Media(MediaCommand::AdoptRelay {
            legs: [h.own_leg(), hb.own_leg()],
            media,
            ports,
            timeout: self.cfg.media_timeout,
        }));
        tracing::info!(call = %s.sid, "restored a bridged call a previous run left");
        Ok(h)
    }

    /// The relay of a restored call is bound again: nothing left to do
    /// (true), or the event is not about a restored call (false).
    pub(super) fn restored_relay_opened(&mut self, h: CallHandle) -> bool {
        self.restoring.remove(&h)
    }
}
