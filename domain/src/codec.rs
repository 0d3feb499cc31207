//! Audio codecs the media engine speaks, with their static RTP payload
//! types (RFC 3551 §6).

/// A voice codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, PT 0.
    Pcmu,
    /// G.711 A-law, PT 8.
    Pcma,
    /// G.722 at 16 kHz sampling; RTP clock 8000 for historic reasons
    /// (RFC 3551 §4.5.2), PT 9.
    G722,
}

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::G722];

    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }

    /// Encoding name as in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }

    /// RTP timestamp clock rate.
    pub fn rtp_clock_rate(self) -> u32 {
        8000
    }

    /// Audio sampling rate of the decoded signal.
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::G722 => 16000,
            _ => 8000,
        }
    }

    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }

    /// Matches an `a=rtpmap` encoding name and clock rate.
    pub fn from_rtpmap(name: &str, clock: u32) -> Option<Codec> {
        let c = Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))?;
        (c.rtp_clock_rate() == clock).then_some(c)
    }
}
