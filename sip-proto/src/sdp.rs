//! SDP (RFC 4566) for audio sessions, and the answerer side of the
//! offer/answer model (RFC 3264 §6), SRTP keying by SDES included
//! (RFC 4568 §7, the rules in [`super::sdes::LegKeying`]).

use super::sdes::{KeyingRefusal, LegKeying, NegotiatedSrtp};
use domain::codec::Codec;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn parse(a: &str) -> Option<Direction> {
        Some(match a {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offered one (RFC 3264 §6.1).
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
    /// `a=crypto:` values (RFC 4568 §9.1), as written; read by
    /// [`super::sdes::Crypto::parse`].
    pub crypto: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_user: String,
    pub session_id: u64,
    pub session_version: u64,
    pub origin_addr: String,
    pub session_name: String,
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP line {0}: {1}")]
    Line(usize, &'static str),
    #[error("SDP: {0}")]
    Missing(&'static str),
}

fn parse_connection(v: &str, line: usize) -> Result<IpAddr, SdpError> {
    // c=<nettype> <addrtype> <connection-address>
    let mut it = v.split(' ');
    let (Some("IN"), Some(at), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(SdpError::Line(line, "malformed c= line"));
    };
    // Multicast TTL suffixes are not used for unicast voice.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| SdpError::Line(line, "c= address is not an IP address"))?;
    match (at, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::Line(line, "c= address type mismatch")),
    }
}

/// Upper bound on media sections we look at; more is abuse.
const MAX_MEDIA: usize = 16;
/// Upper bound on crypto attributes of one media section (a real offer
/// lists a few suites).
const MAX_CRYPTO: usize = 16;

impl SessionDescription {
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut sd = SessionDescription {
            origin_user: String::new(),
            session_id: 0,
            session_version: 0,
            origin_addr: String::new(),
            session_name: String::new(),
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut seen_v = false;
        let mut seen_o = false;
        for (idx, raw_line) in text.split('\n').enumerate() {
            let n = idx + 1;
            let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' {
                return Err(SdpError::Line(n, "not a <type>=<value> line"));
            }
            let value = &line[2..];
            match b[0] {
                b'v' => {
                    if value != "0" {
                        return Err(SdpError::Line(n, "unsupported SDP version"));
                    }
                    seen_v = true;
                }
                b'o' => {
                    let f: Vec<&str> = value.split(' ').collect();
                    if f.len() != 6 {
                        return Err(SdpError::Line(n, "malformed o= line"));
                    }
                    sd.origin_user = f[0].to_string();
                    sd.session_id = f[1].parse().map_err(|_| SdpError::Line(n, "bad sess-id"))?;
                    sd.session_version = f[2]
                        .parse()
                        .map_err(|_| SdpError::Line(n, "bad sess-version"))?;
                    sd.origin_addr = f[5].to_string();
                    seen_o = true;
                }
                b's' => sd.session_name = value.to_string(),
                b'c' => {
                    let ip = parse_connection(value, n)?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(ip),
                        None => sd.connection = Some(ip),
                    }
                }
                b'm' => {
                    if sd.media.len() >= MAX_MEDIA {
                        return Err(SdpError::Line(n, "too many m= lines"));
                    }
                    let f: Vec<&str> = value.split(' ').collect();
                    if f.len() < 4 {
                        return Err(SdpError::Line(n, "malformed m= line"));
                    }
                    // <port>[/<number of ports>]
                    let port_s = f[1].split('/').next().unwrap_or(f[1]);
                    let port: u16 = port_s
                        .parse()
                        .map_err(|_| SdpError::Line(n, "bad m= port"))?;
                    sd.media.push(MediaDescription {
                        media: f[0].to_string(),
                        port,
                        proto: f[2].to_string(),
                        formats: f[3..].iter().map(|s| s.to_string()).collect(),
                        connection: None,
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        ptime: None,
                        direction: None,
                        crypto: Vec::new(),
                    });
                }
                b'a' => {
                    let (name, val) = match value.find(':') {
                        Some(i) => (&value[..i], Some(&value[i + 1..])),
                        None => (value, None),
                    };
                    if let Some(d) = Direction::parse(name) {
                        match sd.media.last_mut() {
                            Some(m) => m.direction = Some(d),
                            None => sd.direction = Some(d),
                        }
                        continue;
                    }
                    let Some(m) = sd.media.last_mut() else {
                        continue;
                    };
                    match (name, val) {
                        ("rtpmap", Some(v)) => {
                            let (pt, rest) = v
                                .split_once(' ')
                                .ok_or(SdpError::Line(n, "malformed rtpmap"))?;
                            let pt: u8 = pt
                                .parse()
                                .map_err(|_| SdpError::Line(n, "bad rtpmap payload type"))?;
                            let mut enc = rest.trim().split('/');
                            let encoding = enc.next().unwrap_or_default().to_string();
                            let clock_rate: u32 = enc
                                .next()
                                .and_then(|c| c.parse().ok())
                                .ok_or(SdpError::Line(n, "bad rtpmap clock rate"))?;
                            if pt > 127 || encoding.is_empty() {
                                return Err(SdpError::Line(n, "bad rtpmap"));
                            }
                            m.rtpmaps.push(RtpMap {
                                payload_type: pt,
                                encoding,
                                clock_rate,
                            });
                        }
                        ("fmtp", Some(v)) => {
                            if let Some((pt, p)) = v.split_once(' ')
                                && let Ok(pt) = pt.parse()
                            {
                                m.fmtps.push((pt, p.to_string()));
                            }
                        }
                        ("ptime", Some(v)) => {
                            let p: u32 = v
                                .trim()
                                .parse()
                                .map_err(|_| SdpError::Line(n, "bad ptime"))?;
                            if p == 0 || p > 1000 {
                                return Err(SdpError::Line(n, "ptime out of range"));
                            }
                            m.ptime = Some(p);
                        }
                        ("crypto", Some(v)) => {
                            if m.crypto.len() >= MAX_CRYPTO {
                                return Err(SdpError::Line(n, "too many crypto attributes"));
                            }
                            m.crypto.push(v.to_string());
                        }
                        _ => {}
                    }
                }
                b't' | b'b' | b'i' | b'u' | b'e' | b'p' | b'z' | b'k' | b'r' => {}
                _ => return Err(SdpError::Line(n, "unknown line type")),
            }
        }
        if !seen_v {
            return Err(SdpError::Missing("missing v= line"));
        }
        if !seen_o {
            return Err(SdpError::Missing("missing o= line"));
        }
        Ok(sd)
    }

    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(256);
        let ipv = |ip: &IpAddr| if ip.is_ipv4() { "IP4" } else { "IP6" };
        let _ = write!(s, "v=0\r\n");
        let oaddr_type = if self.origin_addr.contains(':') {
            "IP6"
        } else {
            "IP4"
        };
        let _ = write!(
            s,
            "o={} {} {} IN {} {}\r\n",
            self.origin_user, self.session_id, self.session_version, oaddr_type, self.origin_addr
        );
        let _ = write!(
            s,
            "s={}\r\n",
            if self.session_name.is_empty() {
                "-"
            } else {
                &self.session_name
            }
        );
        if let Some(c) = &self.connection {
            let _ = write!(s, "c=IN {} {}\r\n", ipv(c), c);
        }
        s.push_str("t=0 0\r\n");
        for m in &self.media {
            let _ = write!(
                s,
                "m={} {} {} {}\r\n",
                m.media,
                m.port,
                m.proto,
                m.formats.join(" ")
            );
            if let Some(c) = &m.connection {
                let _ = write!(s, "c=IN {} {}\r\n", ipv(c), c);
            }
            for r in &m.rtpmaps {
                let _ = write!(
                    s,
                    "a=rtpmap:{} {}/{}\r\n",
                    r.payload_type, r.encoding, r.clock_rate
                );
            }
            for (pt, p) in &m.fmtps {
                let _ = write!(s, "a=fmtp:{pt} {p}\r\n");
            }
            if let Some(p) = m.ptime {
                let _ = write!(s, "a=ptime:{p}\r\n");
            }
            if let Some(d) = m.direction {
                let _ = write!(s, "a={}\r\n", d.as_str());
            }
            for c in &m.crypto {
                let _ = write!(s, "a=crypto:{c}\r\n");
            }
        }
        s
    }
}

/// What was agreed for the call's audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Where the peer wants RTP; `None` when on hold with 0.0.0.0 or port 0.
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub payload_type: u8,
    /// RFC 4733 telephone-event payload type, when both sides have it.
    pub telephone_event: Option<u8>,
    pub ptime: u32,
    /// Our direction (the answer's).
    pub direction: Direction,
    /// SRTP when agreed (`None`: plain RTP).
    pub srtp: Option<NegotiatedSrtp>,
}

/// Our side of a session: where our RTP socket is, the o= identity and
/// the leg's SRTP keying.
#[derive(Clone, Debug)]
pub struct LocalMedia {
    pub addr: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub session_version: u64,
    pub keying: LegKeying,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferAnswerError {
    /// No acceptable audio stream: answer 488 (RFC 3264 §6).
    #[error("no acceptable audio stream in the offer")]
    NotAcceptable,
    /// An audio stream we could take, but not under the leg's SRTP
    /// policy: answer 488 saying why.
    #[error("{0}")]
    Keying(KeyingRefusal),
}

impl OfferAnswerError {
    /// The reason label of the rejection counter and the call record.
    pub fn label(&self) -> &'static str {
        match self {
            OfferAnswerError::NotAcceptable => "not_acceptable",
            OfferAnswerError::Keying(k) => k.label(),
        }
    }

    /// The Warning header of the 488 (RFC 3261 §20.43).
    pub fn warning(&self) -> String {
        match self {
            OfferAnswerError::NotAcceptable => {
                "304 voice-gateway \"Media type not available\"".into()
            }
            OfferAnswerError::Keying(k) => format!("399 voice-gateway \"{k}\""),
        }
    }
}

/// Whether an m= line's transport is one we carry: RTP/AVP, or RTP/SAVP
/// (SRTP keyed by SDES).
pub fn rtp_proto(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/SAVP")
}

impl MediaDescription {
    /// The codec for a payload type, from rtpmap or the static table.
    fn codec_of(&self, pt: u8) -> Option<Codec> {
        match self.rtpmaps.iter().find(|r| r.payload_type == pt) {
            Some(r) => Codec::from_rtpmap(&r.encoding, r.clock_rate),
            None => Codec::from_static_payload_type(pt),
        }
    }

    fn telephone_event(&self) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|r| r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == 8000)
            .map(|r| r.payload_type)
    }
}

/// The codecs of the offer's first usable audio stream, in the offerer's
/// preference order, restricted to `allowed` (what a B2BUA may offer on to
/// the far leg without transcoding), and its telephone-event payload type.
pub fn offered_codecs(offer: &SessionDescription, allowed: &[Codec]) -> (Vec<Codec>, Option<u8>) {
    let Some(m) = offer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0 && rtp_proto(&m.proto))
    else {
        return (Vec::new(), None);
    };
    let mut out: Vec<Codec> = Vec::new();
    for f in &m.formats {
        if let Some(c) = f.parse::<u8>().ok().and_then(|pt| m.codec_of(pt))
            && allowed.contains(&c)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    (out, m.telephone_event())
}

/// Builds the answer to `offer` (RFC 3264 §6.1): the first audio stream
/// with a codec we support (offerer's preference order, restricted to
/// `allowed`) that the leg's SRTP policy takes is accepted, keyed as
/// [`LegKeying::answer`] says; every other stream is rejected with port 0.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
    allowed: &[Codec],
) -> Result<(SessionDescription, NegotiatedAudio), OfferAnswerError> {
    let mut chosen: Option<NegotiatedAudio> = None;
    let mut refused: Option<KeyingRefusal> = None;
    let mut media = Vec::with_capacity(offer.media.len());
    for m in &offer.media {
        let mut rejected = MediaDescription {
            media: m.media.clone(),
            port: 0,
            proto: m.proto.clone(),
            formats: m.formats.clone(),
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            direction: None,
            crypto: Vec::new(),
        };
        let usable = chosen.is_none() && m.media == "audio" && m.port != 0 && rtp_proto(&m.proto);
        let pick = usable
            .then(|| {
                m.formats.iter().find_map(|f| {
                    let pt: u8 = f.parse().ok()?;
                    let c = m.codec_of(pt)?;
                    allowed.contains(&c).then_some((pt, c))
                })
            })
            .flatten();
        let keyed = pick.map(|p| (p, local.keying.answer(&m.proto, &m.crypto)));
        let (pt, codec, srtp) = match keyed {
            Some(((pt, codec), Ok(srtp))) => (pt, codec, srtp),
            other => {
                if let Some((_, Err(why))) = other {
                    refused.get_or_insert(why);
                }
                if rejected.formats.is_empty() {
                    rejected.formats.push("0".into());
                }
                media.push(rejected);
                continue;
            }
        };
        let te = m.telephone_event();
        let offered_dir = m
            .direction
            .or(offer.direction)
            .unwrap_or(Direction::SendRecv);
        let conn = m.connection.or(offer.connection);
        let remote = conn
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, m.port));
        let ptime = m.ptime.unwrap_or(20);
        let mut formats = vec![pt.to_string()];
        let mut rtpmaps = vec![RtpMap {
            payload_type: pt,
            encoding: codec.encoding_name().to_string(),
            clock_rate: codec.rtp_clock_rate(),
        }];
        let mut fmtps = Vec::new();
        if let Some(te) = te {
            formats.push(te.to_string());
            rtpmaps.push(RtpMap {
                payload_type: te,
                encoding: "telephone-event".into(),
                clock_rate: 8000,
            });
            fmtps.push((te, "0-16".to_string()));
        }
        let direction = offered_dir.reverse();
        media.push(MediaDescription {
            media: "audio".into(),
            port: local.port,
            proto: m.proto.clone(),
            formats,
            connection: None,
            rtpmaps,
            fmtps,
            ptime: Some(ptime),
            direction: Some(direction),
            crypto: srtp
                .iter()
                .map(|n| super::sdes::Crypto::with_key(n.tag, n.suite, n.local).encode())
                .collect(),
        });
        chosen = Some(NegotiatedAudio {
            remote,
            codec,
            payload_type: pt,
            telephone_event: te,
            ptime,
            direction,
            srtp,
        });
    }
    let negotiated = chosen.ok_or(match refused {
        Some(why) => OfferAnswerError::Keying(why),
        None => OfferAnswerError::NotAcceptable,
    })?;
    let answer = SessionDescription {
        origin_user: "-".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_addr: local.addr.to_string(),
        session_name: "-".into(),
        connection: Some(local.addr),
        direction: None,
        media,
    };
    Ok((answer, negotiated))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\nm=video 6002 RTP/AVP 31\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 30000,
            session_id: 1,
            session_version: 1,
            keying: LegKeying::plain(),
        }
    }

    #[test]
    fn answers_first_supported_codec_and_rejects_video() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let (ans, neg) = answer(&offer, &local(), &Codec::ALL).unwrap();
        assert_eq!(neg.codec, Codec::Pcma);
        assert_eq!(neg.telephone_event, Some(101));
        assert_eq!(neg.remote, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(ans.media.len(), 2);
        assert_eq!(ans.media[1].port, 0);
        let text = ans.encode();
        assert!(text.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"));
        // The answer parses back.
        SessionDescription::parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn restricted_codecs_and_488() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let (_, neg) = answer(&offer, &local(), &[Codec::Pcmu]).unwrap();
        assert_eq!(neg.codec, Codec::Pcmu);
        assert_eq!(
            answer(&offer, &local(), &[Codec::G722]),
            Err(OfferAnswerError::NotAcceptable)
        );
    }

    #[test]
    fn hold_directions() {
        let held = OFFER.replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n");
        let offer = SessionDescription::parse(held.as_bytes()).unwrap();
        let (_, neg) = answer(&offer, &local(), &Codec::ALL).unwrap();
        assert_eq!(neg.direction, Direction::RecvOnly);
        let zero = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let offer = SessionDescription::parse(zero.as_bytes()).unwrap();
        let (_, neg) = answer(&offer, &local(), &Codec::ALL).unwrap();
        assert_eq!(neg.remote, None);
    }

    #[test]
    fn malformed_sdp() {
        assert!(SessionDescription::parse(b"v=1\r\n").is_err());
        assert!(SessionDescription::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(SessionDescription::parse(b"v=0\r\no=a b c IN IP4 x\r\n").is_err());
        assert!(SessionDescription::parse(b"garbage").is_err());
        assert!(SessionDescription::parse(&[0xff, 0xfe]).is_err());
        assert!(
            SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 999.1.1.1\r\n")
                .is_err()
        );
    }
}
