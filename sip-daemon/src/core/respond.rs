//! What the core sends: our Via and Contact, responses to server
//! transactions (and stateless ones), and transmission to a peer.

use super::inbound::replace_flag_rport;
use super::*;

impl Core {
    pub(super) fn transmit(&mut self, peer: Peer, bytes: Bytes) {
        self.out
            .push_back(Output::Transmit(Transmit { peer, bytes }));
    }

    /// Host for our Via / Contact on the listener `local`.
    pub(super) fn local_host(&self, local: SocketAddr) -> String {
        let ip = if local.ip().is_unspecified() {
            self.cfg.advertised_ip
        } else {
            local.ip()
        };
        match ip {
            IpAddr::V4(a) => format!("{a}:{}", local.port()),
            IpAddr::V6(a) => format!("[{a}]:{}", local.port()),
        }
    }

    pub(super) fn our_via(&mut self, peer: &Peer) -> (String, String) {
        let branch = self.new_branch();
        // RFC 5923: over a stream, the peer may reuse our connection for
        // its requests to us.
        let alias = if peer.transport.is_reliable() {
            ";alias"
        } else {
            ""
        };
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport{alias}",
            peer.transport.via_token(),
            self.local_host(peer.local)
        );
        (via, branch)
    }

    /// Whether call `h`'s dialog is a SIPS one.
    pub(super) fn sips_dialog(&self, h: CallHandle) -> bool {
        self.calls.get(&h).is_some_and(|c| c.dialog.secure)
    }

    /// Our Contact toward `peer`: a `sips:` URI in a SIPS dialog
    /// (§12.1.1, RFC 5630 §3.1.3: never with `transport=tls`), else a
    /// `sip:` URI naming the transport when it is not UDP.
    pub(super) fn contact_for(&self, peer: &Peer, user: Option<&str>, secure: bool) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        let host = self.local_host(peer.local);
        if secure && peer.transport == TransportKind::Tls {
            return format!("<sips:{user}{host}>");
        }
        let transport = match peer.transport {
            TransportKind::Udp => String::new(),
            t => format!(";transport={}", t.label()),
        };
        format!("<sip:{user}{host}{transport}>")
    }

    /// Where responses to a request from `peer` go (§18.2.2, RFC 3581):
    /// streams answer on the same connection; datagrams go to the source
    /// address when `rport` asked for it or responses are symmetric, else
    /// to the source IP and the Via port.
    pub(super) fn response_peer(&self, peer: Peer, req: &Request) -> Peer {
        if peer.transport.is_reliable() || self.cfg.symmetric_responses {
            return peer;
        }
        let via = req.core.top_via();
        if via.params.has("rport") {
            return peer;
        }
        Peer {
            remote: SocketAddr::new(peer.remote.ip(), via.port.unwrap_or(5060)),
            ..peer
        }
    }

    /// Adds `received` and `rport` to the top Via of a response (§18.2.1,
    /// RFC 3581 §4).
    pub(super) fn stamp_via(b: &mut MessageBuilder, source: SocketAddr, req: &Request) {
        let via = req.core.top_via();
        let mut extra = String::new();
        let sent_by_ip = via.host.ip();
        if sent_by_ip != Some(source.ip()) {
            extra.push_str(&format!(";received={}", source.ip()));
        }
        let rport_flag = matches!(via.params.get("rport"), Some(None));
        if let Some(first) = b.headers.0.iter_mut().find(|h| h.name == HeaderName::Via) {
            // Only the first element of the first Via line is ours to stamp.
            let (head, tail) = match crate::sip::grammar::split_commas(&first.value).len() {
                1 => (first.value.clone(), String::new()),
                _ => {
                    let parts = crate::sip::grammar::split_commas(&first.value);
                    (parts[0].to_string(), format!(", {}", parts[1..].join(", ")))
                }
            };
            let mut head = head;
            if rport_flag {
                head = replace_flag_rport(&head, source.port());
            }
            first.value = format!("{head}{extra}{tail}");
        }
    }

    /// Sends a response through server transaction `id`.
    pub(super) fn respond(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let Some(entry) = self.txns.server.get(&id) else {
            return;
        };
        let Some(req) = entry.request.as_ref() else {
            return;
        };
        let tag = if status > 100 { to_tag } else { None };
        let bytes = self.response_bytes(req, entry.peer.remote, status, reason, tag, extra);
        let peer = entry.peer;
        let Some(entry) = self.txns.server.get_mut(&id) else {
            return;
        };
        if !entry.txn.respond(now, status, bytes.clone()) {
            return;
        }
        if status >= 200 {
            entry.request = None;
        }
        let deadline = entry.txn.next_deadline();
        self.metrics
            .sip_responses
            .with_label_values(&["sent", status_class(status)])
            .inc();
        self.transmit(peer, bytes);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Server(id));
        }
    }

    /// A final response sent without a transaction (§8.2.6 answered once,
    /// retransmissions answered again one for one): for sources we keep no
    /// state for, and for requests refused because the tables are full.
    pub(super) fn reply_stateless(
        &mut self,
        peer: Peer,
        req: &Request,
        status: u16,
        reason: &str,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let tag = self.new_tag();
        let bytes = self.response_bytes(req, peer.remote, status, Some(reason), Some(&tag), extra);
        self.metrics
            .sip_responses
            .with_label_values(&["sent", status_class(status)])
            .inc();
        let to = self.response_peer(peer, req);
        self.transmit(to, bytes);
    }

    /// A response to `req` from `source`: its Via stamped (§18.2.1), our
    /// Server header, then what `extra` adds.
    pub(super) fn response_bytes(
        &self,
        req: &Request,
        source: SocketAddr,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) -> Bytes {
        let mut b = build::response_to(req, status, reason, to_tag);
        Self::stamp_via(&mut b, source, req);
        b = extra(b.header(HeaderName::Server, self.cfg.server_name.as_str()));
        Bytes::from(b.encode())
    }

    /// A final response with a random To tag (requests outside any call).
    pub(super) fn reply(&mut self, now: Instant, id: TxnId, status: u16, reason: Option<&str>) {
        let tag = self.new_tag();
        self.respond(now, id, status, reason, Some(&tag), |b| b);
    }

    pub(super) fn reply_with(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let tag = self.new_tag();
        self.respond(now, id, status, None, Some(&tag), extra);
    }
}
