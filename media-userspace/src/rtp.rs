//! RTP fixed header (RFC 3550 §5.1), read and rewritten in place.

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet shorter than the RTP header")]
    TooShort,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("CSRC list or extension runs past the packet")]
    Truncated,
    #[error("padding length is invalid")]
    BadPadding,
}

/// A validated view of an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload.
    pub payload_offset: usize,
    /// Payload length without padding.
    pub payload_len: usize,
}

/// Whether a datagram on an RTP port is RTCP multiplexed on it (RFC 5761
/// §4: payload types 64–95 with the marker bit are RTCP packet types).
pub fn looks_like_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && (buf[0] >> 6) == 2 && (192..=223).contains(&buf[1])
}

impl RtpHeader {
    pub fn parse(buf: &[u8]) -> Result<RtpHeader, RtpError> {
        Self::parse_with(buf, true)
    }

    /// The header of an SRTP packet (RFC 3711 §3.1): its padding count is
    /// in the encrypted payload, so the payload here is everything after
    /// the header, authentication tag included.
    pub fn parse_protected(buf: &[u8]) -> Result<RtpHeader, RtpError> {
        Self::parse_with(buf, false)
    }

    fn parse_with(buf: &[u8], honour_padding: bool) -> Result<RtpHeader, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let padding = honour_padding && buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = (buf[0] & 0x0f) as usize;
        let mut offset = HEADER_LEN + 4 * csrc_count;
        if extension {
            let ext = buf.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
            let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
            offset += 4 + 4 * words;
        }
        if offset > buf.len() {
            return Err(RtpError::Truncated);
        }
        let mut end = buf.len();
        if padding {
            let pad = buf[buf.len() - 1] as usize;
            if pad == 0 || offset + pad > buf.len() {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpHeader {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload_offset: offset,
            payload_len: end - offset,
        })
    }
}

/// Rewrites the SSRC of a packet already validated by [`RtpHeader::parse`].
pub fn set_ssrc(buf: &mut [u8], ssrc: u32) {
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

pub fn set_sequence(buf: &mut [u8], seq: u16) {
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
}

pub fn set_timestamp(buf: &mut [u8], ts: u32) {
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
}

/// Writes a fixed header (no CSRC, no extension) into `buf[..12]`.
pub fn write_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    set_sequence(buf, seq);
    set_timestamp(buf, ts);
    set_ssrc(buf, ssrc);
}

/// The sender SSRC of an RTCP packet (the first compound member's, RFC
/// 3550 §6.4), when it is long enough to have one.
pub fn rtcp_sender_ssrc(buf: &[u8]) -> Option<u32> {
    buf.get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_rewrite() {
        let mut p = vec![0u8; 172];
        write_header(&mut p, true, 0, 7, 160, 0xdeadbeef);
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker);
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (0, 7, 160, 0xdeadbeef)
        );
        assert_eq!((h.payload_offset, h.payload_len), (12, 160));
        set_ssrc(&mut p, 1);
        assert_eq!(RtpHeader::parse(&p).unwrap().ssrc, 1);
    }

    #[test]
    fn malformed_packets() {
        assert_eq!(RtpHeader::parse(&[0x80; 5]), Err(RtpError::TooShort));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::BadVersion));
        let mut csrc = vec![0u8; 12];
        csrc[0] = 0x8f; // 15 CSRCs but no room
        assert_eq!(RtpHeader::parse(&csrc), Err(RtpError::Truncated));
        let mut ext = vec![0u8; 16];
        ext[0] = 0x90;
        ext[14] = 0xff; // extension length runs past the end
        assert_eq!(RtpHeader::parse(&ext), Err(RtpError::Truncated));
        let mut pad = vec![0u8; 13];
        pad[0] = 0xa0;
        pad[12] = 5; // 5 bytes of padding but only 1 payload byte
        assert_eq!(RtpHeader::parse(&pad), Err(RtpError::BadPadding));
        let mut zero_pad = vec![0u8; 13];
        zero_pad[0] = 0xa0;
        assert_eq!(RtpHeader::parse(&zero_pad), Err(RtpError::BadPadding));
    }

    #[test]
    fn rtcp_demux() {
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 1];
        assert!(looks_like_rtcp(&rtcp));
        assert!(!looks_like_rtcp(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}
