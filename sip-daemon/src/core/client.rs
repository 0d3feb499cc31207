//! Our client transactions (RFC 3261 §17.1): starting them, their
//! responses, their timers, and failures of the transport under them.

use super::*;

impl Core {
    pub(super) fn on_response(&mut self, now: Instant, resp: Response) {
        self.metrics
            .sip_responses
            .with_label_values(&["received", status_class(resp.status)])
            .inc();
        let Some(branch) = resp.core.top_via().branch() else {
            return;
        };
        // A CANCEL shares its INVITE's branch (§9.1): told apart by method.
        let id = if resp.core.cseq.method == Method::Cancel {
            self.txns.client_index.get(&format!("{branch}|CANCEL"))
        } else {
            self.txns.client_index.get(branch)
        };
        let Some(&id) = id else {
            tracing::debug!(
                status = resp.status,
                "response matches no client transaction"
            );
            return;
        };
        let Some(entry) = self.txns.client.get_mut(&id) else {
            return;
        };
        let action = entry.txn.on_response(now, resp.status);
        let (deadline, done) = (entry.txn.next_deadline(), entry.txn.is_terminated());
        let (purpose, peer) = (entry.purpose, entry.peer);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Client(id));
        }
        if done {
            self.txns.remove_client(id);
        }
        match action {
            ResponseAction::ResendAck(ack) => self.transmit(peer, ack),
            ResponseAction::Deliver => match purpose {
                txns::ClientPurpose::Invite(hb) => self.on_out_response(now, hb, id, resp),
                txns::ClientPurpose::Refer(h) => self.on_refer_response(now, h, resp.status),
                txns::ClientPurpose::Message(m) => self.on_sms_response(now, m, resp),
                txns::ClientPurpose::Reinvite(side) => {
                    self.on_reinvite_response(now, side, id, resp)
                }
                _ => {}
            },
            ResponseAction::Absorb => {}
        }
    }

    /// Starts a non-INVITE client transaction and sends its request.
    pub(super) fn start_client_request(
        &mut self,
        now: Instant,
        peer: Peer,
        branch: String,
        bytes: Bytes,
        purpose: txns::ClientPurpose,
    ) {
        self.start_client_txn(now, TxnKind::NonInvite, peer, branch, bytes, purpose);
    }

    /// Starts a client transaction (§17.1), sends its request and arms its
    /// timers; returns its id. `branch` is what responses are matched by.
    pub(super) fn start_client_txn(
        &mut self,
        now: Instant,
        kind: TxnKind,
        peer: Peer,
        branch: String,
        bytes: Bytes,
        purpose: txns::ClientPurpose,
    ) -> TxnId {
        let txn = ClientTransaction::new(
            now,
            kind,
            bytes.clone(),
            peer.transport.is_reliable(),
            self.cfg.timers,
        );
        let deadline = txn.next_deadline();
        let id = self.new_id();
        self.txns.insert_client(
            id,
            txns::ClientEntry {
                txn,
                branch,
                peer,
                purpose,
            },
        );
        self.transmit(peer, bytes);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Client(id));
        }
        id
    }

    /// A client transaction that got no answer (Timer B/F) or whose
    /// transport failed: its request's user learns it failed.
    pub(super) fn client_failed(&mut self, now: Instant, purpose: txns::ClientPurpose) {
        match purpose {
            txns::ClientPurpose::Invite(hb) => self.on_out_invite_timeout(now, hb),
            txns::ClientPurpose::Reinvite(side) => self.on_reinvite_timeout(now, side),
            txns::ClientPurpose::Message(m) => self.sms_failed(m, 408),
            _ => {}
        }
    }

    /// The transport could not reach `peer` with a request (a connection
    /// or a TLS handshake failed, RFC 3261 §17.1.4): the client
    /// transactions to it that never heard back end now, as if they had
    /// timed out, instead of after Timer B or F. One that had an answer
    /// came over a connection that worked, and keeps its timers.
    pub fn handle_transport_failure(&mut self, now: Instant, peer: Peer) {
        let failed: Vec<TxnId> = self
            .txns
            .client
            .iter()
            .filter(|(_, e)| {
                e.peer.transport == peer.transport
                    && e.peer.remote == peer.remote
                    && e.txn.state() == crate::sip::transaction::ClientState::Calling
            })
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(entry) = self.txns.remove_client(id) {
                tracing::debug!(remote = %peer.remote, "transport failed: client transaction ends");
                self.client_failed(now, entry.purpose);
            }
        }
    }

    pub(super) fn server_timer(&mut self, now: Instant, id: TxnId) {
        let Some(entry) = self.txns.server.get_mut(&id) else {
            return;
        };
        match entry.txn.next_deadline() {
            Some(d) if d <= now => {}
            _ => return,
        }
        let ev = entry.txn.on_timeout(now);
        let peer = entry.peer;
        let call = entry.call;
        let next = entry.txn.next_deadline();
        let terminated = entry.txn.is_terminated();
        match ev {
            TimerEvent::Retransmit(b) => self.transmit(peer, b),
            TimerEvent::Timeout => {
                tracing::debug!(id = id.get(), "no ACK for a final response (Timer H)");
            }
            _ => {}
        }
        if terminated {
            self.txns.remove_server(id);
            if let Some(h) = call
                && let Some(c) = self.calls.get_mut(&h)
                && c.invite_txn == Some(id)
            {
                c.invite_txn = None;
            }
        } else if let Some(at) = next {
            self.schedule(at, TimerRef::Server(id));
        }
    }

    pub(super) fn client_timer(&mut self, now: Instant, id: TxnId) {
        let Some(entry) = self.txns.client.get_mut(&id) else {
            return;
        };
        match entry.txn.next_deadline() {
            Some(d) if d <= now => {}
            _ => return,
        }
        let ev = entry.txn.on_timeout(now);
        let peer = entry.peer;
        let purpose = entry.purpose;
        let next = entry.txn.next_deadline();
        let terminated = entry.txn.is_terminated();
        match ev {
            TimerEvent::Retransmit(b) => self.transmit(peer, b),
            TimerEvent::Timeout => self.client_failed(now, purpose),
            _ => {}
        }
        if terminated {
            self.txns.remove_client(id);
        } else if let Some(at) = next {
            self.schedule(at, TimerRef::Client(id));
        }
    }
}
