//! Dialogs (RFC 3261 §12), UAS and UAC sides: identifiers, route set, CSeq spaces,
//! remote target refresh, and building requests inside the dialog.

use crate::sip::build::MessageBuilder;
use crate::sip::header::HeaderName;
use crate::sip::headers_typed::NameAddr;
use crate::sip::transport::Peer;
use crate::sip::uri::Scheme;
use crate::sip::{Method, Request, Response, Uri};

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
    /// A SIPS dialog (§12.1.1: made by a `sips:` Request-URI or top
    /// Record-Route): our Contact in it must be a `sips:` URI.
    pub secure: bool,
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
            secure: invite.uri.scheme == Scheme::Sips
                || invite
                    .headers
                    .list(&HeaderName::RecordRoute)
                    .first()
                    .is_some_and(|r| r.trim_start().to_ascii_lowercase().starts_with("<sips:")),
        }
    }

    /// The UAC side of a dialog created by a 2xx (or reliable 1xx) to an
    /// INVITE we sent (§12.1.2): the route set is the response's
    /// Record-Route in reverse, the remote target its Contact.
    pub fn from_response(
        resp: &Response,
        local_uri: &str,
        local_tag: &str,
        local_cseq: u32,
        peer: Peer,
    ) -> Dialog {
        let remote_target = resp
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|n| n.uri)
            .unwrap_or_else(|| resp.core.to.uri.clone());
        let mut route_set: Vec<String> = resp
            .headers
            .list(&HeaderName::RecordRoute)
            .into_iter()
            .map(str::to_string)
            .collect();
        route_set.reverse();
        let secure = remote_target.scheme == Scheme::Sips;
        Dialog {
            key: DialogKey {
                call_id: resp.core.call_id.clone(),
                local_tag: local_tag.to_string(),
                remote_tag: resp.core.to.tag().unwrap_or("").to_string(),
            },
            local_uri: local_uri.to_string(),
            remote_uri: resp
                .headers
                .get(&HeaderName::To)
                .unwrap_or_default()
                .to_string(),
            remote_target,
            route_set,
            local_cseq,
            remote_cseq: 0,
            peer,
            secure,
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
        self.build(method, self.local_cseq, via, server)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `cseq` (§13.2.2.4): built
    /// inside the dialog, with the INVITE's sequence number and a new
    /// branch.
    pub fn ack(&self, cseq: u32, via: &str, server: &str) -> MessageBuilder {
        self.build(Method::Ack, cseq, via, server)
    }

    fn build(&self, method: Method, cseq: u32, via: &str, server: &str) -> MessageBuilder {
        let mut b = MessageBuilder::request(&method, &self.remote_target)
            .header(HeaderName::Via, via)
            .header(HeaderName::MaxForwards, "70");
        for r in &self.route_set {
            b = b.header(HeaderName::Route, r.as_str());
        }
        b.header(HeaderName::From, self.local_uri.as_str())
            .header(HeaderName::To, self.remote_uri.as_str())
            .header(HeaderName::CallId, self.key.call_id.as_str())
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .header(HeaderName::UserAgent, server)
    }
}

/// Our CSeq space is independent of theirs (§12.1.1); starting from theirs
/// keeps traces readable.
fn rand_cseq(remote: u32) -> u32 {
    remote.max(1)
}
