//! Transaction matching (RFC 3261 §17.2.3, §8.2.2.2) and the tables of
//! live transactions.

use super::TxnId;
use crate::sip::headers_typed::Via;
use crate::sip::transaction::{ClientTransaction, ServerTransaction};
use crate::sip::transport::Peer;
use crate::sip::{Method, Request};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Identifies a server transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxnKey {
    branch: String,
    sent_by: String,
    /// ACK is folded into INVITE (it matches the INVITE transaction).
    method: Method,
    /// Where the request came from: the address and port of a datagram,
    /// the address of a stream (a retransmission may come on a new
    /// connection). Branch and sent-by are the sender's to choose, so
    /// without it anyone could make their request (or CANCEL) match
    /// another source's transaction.
    source: SocketAddr,
}

impl TxnKey {
    pub fn for_request(req: &Request, peer: &Peer) -> TxnKey {
        Self::with_method(req, req.method.clone(), Self::source_of(peer))
    }

    /// The key of the INVITE a CANCEL or ACK from `peer` refers to.
    pub fn invite_of(req: &Request, peer: &Peer) -> TxnKey {
        Self::with_method(req, Method::Invite, Self::source_of(peer))
    }

    /// The key of the INVITE a CANCEL whose own key is `cancel` refers to.
    pub fn invite_of_cancel(req: &Request, cancel: &TxnKey) -> TxnKey {
        Self::with_method(req, Method::Invite, cancel.source)
    }

    fn source_of(peer: &Peer) -> SocketAddr {
        match peer.transport.is_reliable() {
            true => SocketAddr::new(peer.remote.ip(), 0),
            false => peer.remote,
        }
    }

    fn with_method(req: &Request, method: Method, source: SocketAddr) -> TxnKey {
        let method = if method == Method::Ack {
            Method::Invite
        } else {
            method
        };
        let via: &Via = req.core.top_via();
        let branch = if via.has_rfc3261_branch() {
            via.branch().unwrap_or_default().to_string()
        } else {
            // RFC 2543 peers: match on the request's identifying fields
            // (§17.2.3, second paragraph), minus the To tag that an ACK adds.
            format!(
                "2543|{}|{}|{}",
                req.core.call_id,
                req.from_tag().unwrap_or(""),
                req.core.cseq.seq
            )
        };
        TxnKey {
            branch,
            sent_by: via.sent_by().to_ascii_lowercase(),
            method,
            source,
        }
    }
}

/// Identifies a request for merged-request detection (§8.2.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MergeKey {
    call_id: String,
    from_tag: String,
    cseq: u32,
    method: Method,
}

impl MergeKey {
    pub fn for_request(req: &Request) -> MergeKey {
        MergeKey {
            call_id: req.core.call_id.clone(),
            from_tag: req.from_tag().unwrap_or("").to_string(),
            cseq: req.core.cseq.seq,
            method: req.method.clone(),
        }
    }
}

pub struct ServerEntry {
    pub txn: ServerTransaction,
    pub key: TxnKey,
    pub merge_key: Option<MergeKey>,
    /// Where responses go (§18.2.2, RFC 3581).
    pub peer: Peer,
    /// Kept until the final response is sent (to build it).
    pub request: Option<Request>,
    /// The call this INVITE/BYE/... belongs to.
    pub call: Option<super::CallHandle>,
}

/// What a client transaction was started for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPurpose {
    /// BYE sent by us; the call is already ended.
    Bye,
    /// The INVITE of a forwarded call's far leg (its handle).
    Invite(super::OutLegHandle),
    /// CANCEL of such an INVITE.
    Cancel,
    /// NOTIFY of a REFER's progress (responses only end the transaction).
    Notify,
    /// Our re-INVITE carrying a hold or unhold across the bridge.
    Reinvite(crate::core::legs::BridgeSide),
    /// Our REFER asking the caller's carrier to transfer the call.
    Refer(super::CallHandle),
    /// An SMS we send (its handle in `Core::sms_out`).
    Message(super::SmsHandle),
}

pub struct ClientEntry {
    pub txn: ClientTransaction,
    pub branch: String,
    pub peer: Peer,
    pub purpose: ClientPurpose,
}

/// Live transactions, addressed by a numeric id the timer queue uses.
#[derive(Default)]
pub struct TxnTables {
    pub server: HashMap<TxnId, ServerEntry>,
    pub server_index: HashMap<TxnKey, TxnId>,
    pub merge_index: HashMap<MergeKey, TxnId>,
    pub client: HashMap<TxnId, ClientEntry>,
    /// Client transactions by branch.
    pub client_index: HashMap<String, TxnId>,
}

impl TxnTables {
    pub fn insert_server(&mut self, id: TxnId, entry: ServerEntry) {
        self.server_index.insert(entry.key.clone(), id);
        if let Some(m) = &entry.merge_key {
            self.merge_index.insert(m.clone(), id);
        }
        self.server.insert(id, entry);
    }

    pub fn remove_server(&mut self, id: TxnId) -> Option<ServerEntry> {
        let e = self.server.remove(&id)?;
        if self.server_index.get(&e.key) == Some(&id) {
            self.server_index.remove(&e.key);
        }
        if let Some(m) = &e.merge_key
            && self.merge_index.get(m) == Some(&id)
        {
            self.merge_index.remove(m);
        }
        Some(e)
    }

    pub fn insert_client(&mut self, id: TxnId, entry: ClientEntry) {
        self.client_index.insert(entry.branch.clone(), id);
        self.client.insert(id, entry);
    }

    pub fn remove_client(&mut self, id: TxnId) -> Option<ClientEntry> {
        let e = self.client.remove(&id)?;
        self.client_index.remove(&e.branch);
        Some(e)
    }

    pub fn len(&self) -> usize {
        self.server.len() + self.client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
