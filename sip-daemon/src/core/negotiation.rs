//! SDP offer/answer for calls and far legs alike: our offers, answers on
//! relayed pairs, what a negotiated stream means for its media leg, and
//! an answer read back against our offer (RFC 3264).

use super::*;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::{self, LocalMedia, NegotiatedAudio, OfferAnswerError};
use media_userspace::control::LegMedia;

/// An SDP offer from us with every codec we allow plus telephone-event,
/// keyed as the leg's policy asks (RTP/SAVP or RTP/AVP, crypto lines).
pub(super) fn local_offer(codecs: &[Codec], local: &LocalMedia) -> SessionDescription {
    let mut formats: Vec<String> = codecs
        .iter()
        .map(|c| c.static_payload_type().to_string())
        .collect();
    formats.push("101".into());
    let mut rtpmaps: Vec<sdp::RtpMap> = codecs
        .iter()
        .map(|c| sdp::RtpMap {
            payload_type: c.static_payload_type(),
            encoding: c.encoding_name().into(),
            clock_rate: c.rtp_clock_rate(),
        })
        .collect();
    rtpmaps.push(sdp::RtpMap {
        payload_type: 101,
        encoding: "telephone-event".into(),
        clock_rate: 8000,
    });
    SessionDescription {
        origin_user: "-".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_addr: local.addr.to_string(),
        session_name: "-".into(),
        connection: Some(local.addr),
        direction: None,
        media: vec![sdp::MediaDescription {
            media: "audio".into(),
            port: local.port,
            proto: local.keying.offer_proto().into(),
            formats,
            connection: None,
            rtpmaps,
            fmtps: vec![(101, "0-16".into())],
            ptime: Some(20),
            direction: Some(sdp::Direction::SendRecv),
            crypto: local
                .keying
                .offer_lines()
                .iter()
                .map(|c| c.encode())
                .collect(),
        }],
    }
}

/// The answer to an offer in a re-INVITE or UPDATE on one side of a relay
/// whose codec is `current`: the same codec when the offer still has it;
/// otherwise another of `codecs` (RFC 3264 §8.3.2: the peer changed
/// codec), which the relay then transcodes to and from the other side's.
pub(super) fn answer_relayed(
    offer: &sdp::SessionDescription,
    local: &LocalMedia,
    current: Codec,
    codecs: &[Codec],
) -> Result<(sdp::SessionDescription, NegotiatedAudio), OfferAnswerError> {
    sdp::answer(offer, local, &[current]).or_else(|_| {
        let others: Vec<Codec> = codecs
            .iter()
            .copied()
            .filter(|&c| c != current && media_userspace::transcode::can_transcode(c))
            .collect();
        sdp::answer(offer, local, &others)
    })
}

pub(super) fn leg_media(n: &NegotiatedAudio) -> LegMedia {
    LegMedia {
        codec: n.codec,
        payload_type: n.payload_type,
        telephone_event: n.telephone_event,
        ptime_ms: n.ptime,
        remote: n.remote,
        send: n.direction.sends(),
        srtp: n.srtp.as_ref().map(|s| s.keys()),
    }
}

/// Reads the answer to our offer (from an ACK, or a far leg's 18x or
/// 2xx) against what we offered: a codec of ours, and keys answering our
/// crypto lines as the leg's policy asks. `None`: unusable.
pub(super) fn negotiated_from_answer(
    answer: &SessionDescription,
    codecs: &[Codec],
    ours: &SessionDescription,
) -> Option<NegotiatedAudio> {
    let m = answer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)?;
    let our_m = ours.media.iter().find(|m| m.media == "audio")?;
    let our_lines: Vec<crate::sip::sdes::Crypto> = our_m
        .crypto
        .iter()
        .filter_map(|c| crate::sip::sdes::Crypto::parse(c).ok())
        .collect();
    let srtp = match LegKeying::answered(&our_m.proto, &our_lines, &m.crypto) {
        Ok(s) => s,
        Err(why) => {
            tracing::info!(%why, "answer refused");
            return None;
        }
    };
    let pt: u8 = m.formats.first()?.parse().ok()?;
    let codec = m
        .rtpmaps
        .iter()
        .find(|r| r.payload_type == pt)
        .and_then(|r| Codec::from_rtpmap(&r.encoding, r.clock_rate))
        .or_else(|| Codec::from_static_payload_type(pt))
        .filter(|c| codecs.contains(c))?;
    let remote = m
        .connection
        .or(answer.connection)
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, m.port));
    let dir = m
        .direction
        .or(answer.direction)
        .unwrap_or(sdp::Direction::SendRecv);
    Some(NegotiatedAudio {
        remote,
        codec,
        payload_type: pt,
        telephone_event: m
            .rtpmaps
            .iter()
            .find(|r| r.encoding.eq_ignore_ascii_case("telephone-event"))
            .map(|r| r.payload_type),
        ptime: m.ptime.unwrap_or(20),
        direction: dir.reverse(),
        srtp,
    })
}
