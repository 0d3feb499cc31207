//! UAS dialogs (RFC 3261 §12): identifiers, route set, CSeq spaces,
//! remote target refresh, and building requests inside the dialog.

use crate::sip::build::MessageBuilder;
use crate::sip::header::HeaderName;
use crate::sip::headers_typed::NameAddr;
use crate::sip::transport::Peer;
use crate::sip::{Method, Request, Uri};

/// Dialog identity: Call-ID, our tag, their tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogKey {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Clone, Debug)]
pub struct Dialog {
    pub key: DialogKey,
    /// Our To value as sent in responses (with our tag).
    pub local_uri: String,
    /// Their From value as received (with their tag).
    pub remote_uri: String,
    pub remote_target: Uri,
    /// Record-Route values of the INVITE, in order (§12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where in-dialog requests go: symmetric signalling to where the
    /// dialog-creating request came from, on the same connection.
    pub peer: Peer,
}

/// Why an in-dialog request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDialogError {
    /// CSeq lower than the last one (§12.2.2): 500.
    CSeqOutOfOrder,
}

impl Dialog {
    /// The UAS side of a dialog created by `invite` (§12.1.1).
    pub fn from_invite(invite: &Request, local_tag: &str, peer: Peer) -> Dialog {
        let to = invite.headers.get(&HeaderName::To).unwrap_or_default();
        let local_uri = if invite.to_tag().is_some() {
            to.to_string()
        } else {
            format!("{to};tag={local_tag}")
        };
        let remote_target = invite
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|n| n.uri)
            .unwrap_or_else(|| invite.core.from.uri.clone());
        Dialog {
            key: DialogKey {
                call_id: invite.core.call_id.clone(),
                local_tag: local_tag.to_string(),
                remote_tag: invite.from_tag().unwrap_or("").to_string(),
            },
            local_uri,
            remote_uri: invite
                .headers
                .get(&HeaderName::From)
                .unwrap_or_default()
                .to_string(),
            remote_target,
            route_set: invite
                .headers
                .list(&HeaderName::RecordRoute)
                .into_iter()
                .map(str::to_string)
                .collect(),
            local_cseq: rand_cseq(invite.core.cseq.seq),
            remote_cseq: invite.core.cseq.seq,
            peer,
        }
    }

    /// Checks and records the CSeq of an in-dialog request (§12.2.2).
    pub fn accept_remote_cseq(&mut self, req: &Request) -> Result<(), InDialogError> {
        let seq = req.core.cseq.seq;
        if req.method == Method::Ack || req.method == Method::Cancel {
            return Ok(());
        }
        if seq < self.remote_cseq {
            return Err(InDialogError::CSeqOutOfOrder);
        }
        self.remote_cseq = seq;
        Ok(())
    }

    /// Target refresh (§12.2.2): a re-INVITE or UPDATE may carry a new Contact.
    pub fn refresh_target(&mut self, req: &Request) {
        if let Some(n) = req
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
        {
            self.remote_target = n.uri;
        }
    }

    /// A request inside the dialog (§12.2.1.1) with a fresh CSeq. `via` is
    /// our Via value (with its branch).
    pub fn request(&mut self, method: Method, via: &str, server: &str) -> MessageBuilder {
        self.local_cseq = self.local_cseq.wrapping_add(1) & 0x7fff_ffff;
        let mut b = MessageBuilder::request(&method, &self.remote_target)
            .header(HeaderName::Via, via)
            .header(HeaderName::MaxForwards, "70");
        for r in &self.route_set {
            b = b.header(HeaderName::Route, r.as_str());
        }
        b.header(HeaderName::From, self.local_uri.as_str())
            .header(HeaderName::To, self.remote_uri.as_str())
            .header(HeaderName::CallId, self.key.call_id.as_str())
            .header(HeaderName::CSeq, format!("{} {method}", self.local_cseq))
            .header(HeaderName::UserAgent, server)
    }
}

/// Our CSeq space is independent of theirs (§12.1.1); starting from theirs
/// keeps traces readable.
fn rand_cseq(remote: u32) -> u32 {
    remote.max(1)
}
