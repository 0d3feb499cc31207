//! Route `forward`: the B2BUA (RFC 7092 §3.1, a signalling and media
//! relaying back-to-back user agent). The inbound leg (a [`Call`], the UAS
//! side) is bridged to an outbound leg ([`OutLeg`], the UAC side) that we
//! place toward the number's target, through its trunk (with digest
//! authentication when the trunk challenges, RFC 3261 §22.2) or to a
//! registered user. Media runs through a relay pair in the media workers
//! (and the XDP fast path where it can serve): no transcoding, so the far
//! leg is offered only the codecs the caller offered.
//!
//! Outcomes of the far leg, as the caller sees them and as the call
//! record names them: answered (bridged); busy (486); declined (603);
//! no_answer (ring timeout or 408/480: 480); not_found (404); unreachable
//! (no response at all: 408); failed (any other failure: 4xx/6xx passed
//! through, 5xx as 502). Either side's BYE ends both.

//!
//! By phase: `target` (where the call goes), `setup` (the relay and the
//! far INVITE), `answer` (the far side's responses), `failure` (CANCEL,
//! timeouts, fallback, BYE) and `in_dialog` (the far side's requests).

mod answer;
mod failure;
mod in_dialog;
mod setup;
mod target;

use super::*;
use crate::sip::digest::{Challenge, Credentials};
use media_userspace::control::LegMedia;

/// Redirections (3xx) a far leg follows before the failure stands.
const MAX_REDIRECTS: u8 = 3;

/// Methods the far leg of a forwarded call accepts: REFER too (blind
/// transfer by the far side, `transfer.rs`).
pub const ALLOW_FAR: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER";

/// How forwarded calls are placed.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// The far leg may ring this long; then it is canceled and the call
    /// ends `no_answer` (480).
    pub ring_timeout: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            ring_timeout: Duration::from_secs(30),
        }
    }
}

/// The Authorization (401) or Proxy-Authorization (407) header answering
/// the challenge in `resp` with `target`'s trunk credentials (RFC 3261
/// §22.2), for a request of `method`; `None` when there is nothing to
/// answer (another status, no credentials, no parsable challenge).
pub(super) fn digest_answer(
    resp: &Response,
    target: &OutTarget,
    method: &str,
    cnonce: &str,
) -> Option<(HeaderName, String)> {
    let (challenge_h, answer_h) = match resp.status {
        401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
        407 => (
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        ),
        _ => return None,
    };
    let (user, pass) = target.credentials.as_ref()?;
    let ch = Challenge::parse(resp.headers.get(&challenge_h)?).ok()?;
    let uri = target.uri.to_string();
    let creds = Credentials::answer(&ch, user, pass, method, &uri, cnonce);
    Some((answer_h, creds.encode()))
}

/// What a final failure of the far leg means for the caller: the cause in
/// the call record and the status the caller gets.
pub fn failure_outcome(status: u16) -> (&'static str, u16) {
    match status {
        486 | 600 => ("busy", 486),
        603 => ("declined", 603),
        408 | 480 => ("no_answer", 480),
        404 | 484 | 604 => ("not_found", 404),
        // Our own credentials failed: the caller can do nothing about it.
        401 | 407 => ("failed", 502),
        // RFC 3261 §16.7 item 6: a 5xx is not the caller's to retry here.
        500..=599 => ("failed", 502),
        s if (400..700).contains(&s) => ("failed", s),
        _ => ("failed", 502),
    }
}

#[cfg(test)]
mod tests {
    use super::failure_outcome;

    #[test]
    fn far_failures_map_to_defined_outcomes() {
        assert_eq!(failure_outcome(486), ("busy", 486));
        assert_eq!(failure_outcome(600), ("busy", 486));
        assert_eq!(failure_outcome(603), ("declined", 603));
        assert_eq!(failure_outcome(480), ("no_answer", 480));
        assert_eq!(failure_outcome(408), ("no_answer", 480));
        assert_eq!(failure_outcome(404), ("not_found", 404));
        assert_eq!(failure_outcome(407), ("failed", 502));
        assert_eq!(failure_outcome(503), ("failed", 502));
        assert_eq!(failure_outcome(415), ("failed", 415));
    }
}
