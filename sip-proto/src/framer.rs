//! Cuts SIP messages out of a byte stream (RFC 3261 §18.3): the header
//! section ends at the first blank line and Content-Length, mandatory on
//! streams, says where the body ends. Sans-IO: feed bytes, take frames.
//!
//! CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped; a
//! double-CRLF "ping" is reported so the edge can answer with a single
//! CRLF "pong".

use super::grammar;
use super::parse::find_header_end;

/// What the framer found in the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One complete message, start line through body.
    Message(Vec<u8>),
    /// A CRLFCRLF keep-alive ping (answer with CRLF).
    Ping,
}

/// The stream cannot be framed any further; the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("Content-Length is required on a stream transport")]
    NoContentLength,
    #[error("malformed Content-Length")]
    BadContentLength,
}

/// Resumes where it stopped: bytes already searched for the end of the
/// header section are not searched again, and once the header section is
/// read the message's length is kept, so a sender trickling one byte at a
/// time costs linear work, not quadratic.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_message: usize,
    /// Leading bytes of `buf` searched for the end of the header section.
    scanned: usize,
    /// The whole length of the message being framed, once its header
    /// section was read.
    framed: Option<usize>,
    /// Bytes examined in all: what the linear-cost test reads.
    examined: u64,
}

impl StreamFramer {
    pub fn new(max_message: usize) -> StreamFramer {
        StreamFramer {
            buf: Vec::new(),
            max_message,
            scanned: 0,
            framed: None,
            examined: 0,
        }
    }

    /// Bytes examined so far by the header-section search.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Bytes held waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The header section of the message being framed, through its blank
    /// line, once it has all arrived: what a framing error is answered from.
    pub fn head(&self) -> Option<&[u8]> {
        let start = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        let rest = &self.buf[start..];
        find_header_end(rest).map(|(_, body)| &rest[..body])
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        let crlf = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if crlf > 0 {
            let ping = self.buf[..crlf].windows(4).any(|w| w == b"\r\n\r\n");
            // A lone CR/LF at the end may be the start of a ping: wait.
            if crlf == self.buf.len() && !ping {
                if crlf > 4 {
                    self.buf.clear();
                }
                return Ok(None);
            }
            self.buf.drain(..crlf);
            // Only between messages: nothing of one was scanned yet.
            self.scanned = 0;
            self.framed = None;
            if ping {
                return Ok(Some(Frame::Ping));
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let total = match self.framed {
            Some(total) => total,
            None => {
                // The end pattern is at most 3 bytes long: step back so a
                // pattern split across two pushes is still found.
                let from = self.scanned.saturating_sub(2);
                self.examined += (self.buf.len() - from) as u64;
                let Some((head_end, body_start)) =
                    find_header_end(&self.buf[from..]).map(|(h, b)| (h + from, b + from))
                else {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max_message {
                        return Err(FramingError::TooLarge(self.max_message));
                    }
                    return Ok(None);
                };
                let len = content_length(&self.buf[..head_end])?;
                let total = body_start
                    .checked_add(len)
                    .ok_or(FramingError::BadContentLength)?;
                if total > self.max_message {
                    return Err(FramingError::TooLarge(self.max_message));
                }
                self.framed = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.framed = None;
        Ok(Some(Frame::Message(msg)))
    }
}

/// Content-Length (or its compact form `l`) of a header section.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let head = String::from_utf8_lossy(head);
    let mut found: Option<u64> = None;
    for line in head.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n = grammar::parse_decimal(value, u32::MAX as u64)
                .ok_or(FramingError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::BadContentLength);
            }
            found = Some(n);
        }
    }
    found
        .map(|n| n as usize)
        .ok_or(FramingError::NoContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn a_framing_error_leaves_the_head_to_answer_from() {
        for msg in [
            &b"\r\nOPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n"[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nbody",
        ] {
            let mut f = StreamFramer::new(4096);
            assert!(f.head().is_none());
            f.push(msg);
            assert!(f.next_frame().is_err());
            let head = f.head().expect("the header section");
            assert!(head.starts_with(b"OPTIONS") && head.ends_with(b"\r\n\r\n"));
        }
        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n");
        assert!(f.head().is_none(), "the header section has not ended");
    }

    #[test]
    fn one_byte_segments_cost_linear_work() {
        // A 32 KiB header section and body trickled one byte at a time:
        // each byte is examined a bounded number of times (a rescan from
        // the start on every read would examine it ~16,000 times).
        let mut msg = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..600 {
            msg.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(40)).as_bytes());
        }
        msg.extend_from_slice(b"Content-Length: 4000\r\n\r\n");
        msg.extend(std::iter::repeat_n(b'b', 4000));
        let mut f = StreamFramer::new(65_535);
        let mut frames = 0;
        for b in &msg {
            f.push(std::slice::from_ref(b));
            while let Some(Frame::Message(m)) = f.next_frame().unwrap() {
                assert_eq!(m, msg);
                frames += 1;
            }
        }
        assert_eq!(frames, 1);
        assert!(
            f.examined() <= 4 * msg.len() as u64,
            "{} bytes examined for a {}-byte message",
            f.examined(),
            msg.len()
        );
    }

    #[test]
    fn frames_split_anywhere() {
        let mut all = Vec::new();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(MSG);
        all.extend_from_slice(MSG);
        for cut in 0..all.len() {
            let mut f = StreamFramer::new(4096);
            let mut frames = Vec::new();
            f.push(&all[..cut]);
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
            f.push(&all[cut..]);
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
            assert_eq!(
                frames,
                vec![
                    Frame::Ping,
                    Frame::Message(MSG.to_vec()),
                    Frame::Message(MSG.to_vec())
                ],
                "cut at {cut}"
            );
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn compact_content_length() {
        let mut f = StreamFramer::new(4096);
        f.push(b"BYE sip:a@b SIP/2.0\r\nl: 2\r\n\r\nabXYZ");
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Message(
                b"BYE sip:a@b SIP/2.0\r\nl: 2\r\n\r\nab".to_vec()
            ))
        );
        assert_eq!(f.next_frame().unwrap(), None);
        assert_eq!(f.buffered(), 3);
    }

    #[test]
    fn errors_close_the_stream() {
        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::NoContentLength));

        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: abc\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));

        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 500\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(100)));

        // Headers that never end are bounded too.
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(100)));
    }
}
