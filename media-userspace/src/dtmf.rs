//! DTMF as RTP named telephone events (RFC 4733 §2.3): reception with each
//! key press reported once, and generation toward the caller. Sans-IO.

use std::time::{Duration, Instant};

/// Event codes 0–15 (RFC 4733 §3.2): digits, `*`, `#`, `A`–`D`.
const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

pub fn digit_for_event(code: u8) -> Option<char> {
    DIGITS.get(usize::from(code)).map(|&b| char::from(b))
}

pub fn event_for_digit(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase() as u8;
    DIGITS.iter().position(|&b| b == d).map(|i| i as u8)
}

/// A key press as reported to the AI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    pub duration_ms: u32,
}

/// The 4-byte event payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// In RTP clock units.
    pub duration: u16,
}

impl EventPayload {
    pub fn parse(b: &[u8]) -> Option<EventPayload> {
        let b: &[u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn encode(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (self.volume & 0x3f) | if self.end { 0x80 } else { 0 },
            d[0],
            d[1],
        ]
    }
}

/// An event seen but not reported yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    timestamp: u32,
    payload: EventPayload,
    last_seen: Instant,
}

/// Turns event packets into one [`Digit`] per key press. An event is one
/// RTP timestamp (§2.5.1.1); it is reported at its first end packet, and
/// the retransmitted end packets (§2.5.1.4) are dropped. An event whose
/// end packets were all lost is reported when the next event starts or
/// after [`DtmfReceiver::END_GRACE`] without packets.
#[derive(Debug)]
pub struct DtmfReceiver {
    clock_rate: u32,
    pending: Option<Pending>,
    /// Timestamp of the last event reported.
    reported: Option<u32>,
    pub duplicates: u64,
    pub malformed: u64,
}

impl DtmfReceiver {
    pub const END_GRACE: Duration = Duration::from_millis(500);

    pub fn new(clock_rate: u32) -> DtmfReceiver {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            pending: None,
            reported: None,
            duplicates: 0,
            malformed: 0,
        }
    }

    fn digit(&self, p: &EventPayload) -> Option<Digit> {
        Some(Digit {
            digit: digit_for_event(p.event)?,
            duration_ms: (u32::from(p.duration) * 1000 / self.clock_rate),
        })
    }

    /// One event packet; returns up to two digits (a previous unfinished
    /// event and this one).
    pub fn on_packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Vec<Digit> {
        let Some(p) = EventPayload::parse(payload) else {
            self.malformed += 1;
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.reported == Some(timestamp) {
            self.duplicates += 1;
            return out;
        }
        if let Some(prev) = self.pending.take_if(|prev| prev.timestamp != timestamp) {
            self.reported = Some(prev.timestamp);
            out.extend(self.digit(&prev.payload));
        }
        if p.end {
            self.pending = None;
            self.reported = Some(timestamp);
            out.extend(self.digit(&p));
        } else {
            self.pending = Some(Pending {
                timestamp,
                payload: p,
                last_seen: now,
            });
        }
        out
    }

    /// Reports an event whose end never came.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Digit> {
        let p = self
            .pending
            .take_if(|p| now >= p.last_seen + Self::END_GRACE)?;
        self.reported = Some(p.timestamp);
        self.digit(&p.payload)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|p| p.last_seen + Self::END_GRACE)
    }
}

/// One digit being sent: the packets of one event (§2.5.1), one per
/// packet interval, then the end packet three times (§2.5.1.4).
#[derive(Debug, Clone)]
pub struct DtmfTone {
    event: u8,
    /// Total duration in RTP clock units.
    length: u32,
    /// Packets sent so far.
    sent: u32,
    /// End packets sent so far.
    ends: u32,
}

/// An event packet to put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// First packet of the event: the RTP marker bit (§2.5.1.3).
    pub first: bool,
    pub payload: EventPayload,
}

impl DtmfTone {
    /// Volume in -dBm0 of generated tones.
    const VOLUME: u8 = 10;

    pub fn new(digit: char, duration: Duration, clock_rate: u32) -> Option<DtmfTone> {
        let event = event_for_digit(digit)?;
        let length = (duration.as_millis() as u64 * u64::from(clock_rate) / 1000)
            .clamp(400, u64::from(u16::MAX)) as u32;
        Some(DtmfTone {
            event,
            length,
            sent: 0,
            ends: 0,
        })
    }

    /// The next packet at a packet interval of `step` clock units; `None`
    /// when the event is over.
    pub fn next_packet(&mut self, step: u32) -> Option<EventPacket> {
        let elapsed = (self.sent + 1) * step;
        if elapsed < self.length {
            self.sent += 1;
            return Some(EventPacket {
                first: self.sent == 1,
                payload: EventPayload {
                    event: self.event,
                    end: false,
                    volume: Self::VOLUME,
                    duration: elapsed as u16,
                },
            });
        }
        if self.ends == 3 {
            return None;
        }
        self.ends += 1;
        let first = self.sent == 0 && self.ends == 1;
        Some(EventPacket {
            first,
            payload: EventPayload {
                event: self.event,
                end: true,
                volume: Self::VOLUME,
                duration: self.length as u16,
            },
        })
    }

    /// All packets, end packets included, have been produced.
    pub fn is_done(&self) -> bool {
        self.ends == 3
    }

    /// Packets produced so far.
    pub fn packets(&self) -> u32 {
        self.sent + self.ends
    }

    /// Tone length in RTP clock units.
    pub fn length(&self) -> u32 {
        self.length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        EventPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .encode()
    }

    #[test]
    fn one_digit_per_event_with_repeated_ends() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        let mut got = Vec::new();
        for d in [160u16, 320, 480] {
            got.extend(rx.on_packet(t, 1000, &payload(5, false, d)));
        }
        for _ in 0..3 {
            got.extend(rx.on_packet(t, 1000, &payload(5, true, 800)));
        }
        assert_eq!(
            got,
            vec![Digit {
                digit: '5',
                duration_ms: 100
            }]
        );
        assert_eq!(rx.duplicates, 2);
        // The same digit pressed again is a new timestamp: reported again.
        let again = rx.on_packet(t, 3000, &payload(5, true, 800));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn event_without_end_is_reported_by_the_next_or_a_timeout() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert!(rx.on_packet(t, 10, &payload(10, false, 160)).is_empty());
        let got = rx.on_packet(t, 2000, &payload(11, false, 160));
        assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), "*");
        assert_eq!(rx.poll_timeout(), Some(t + DtmfReceiver::END_GRACE));
        assert_eq!(rx.on_timeout(t), None);
        let late = rx.on_timeout(t + DtmfReceiver::END_GRACE).unwrap();
        assert_eq!(late.digit, '#');
        assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn malformed_and_unknown_events_are_not_digits() {
        let t = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert!(rx.on_packet(t, 1, &[1, 2]).is_empty());
        assert_eq!(rx.malformed, 1);
        // Event 16 (flash) is no digit.
        assert!(rx.on_packet(t, 2, &payload(16, true, 800)).is_empty());
    }

    #[test]
    fn generated_event_has_marker_growing_duration_and_three_ends() {
        let mut tone = DtmfTone::new('#', Duration::from_millis(100), 8000).unwrap();
        let pkts: Vec<_> = std::iter::from_fn(|| tone.next_packet(160)).collect();
        assert_eq!(pkts.len(), 4 + 3);
        assert!(pkts[0].first && pkts[1..].iter().all(|p| !p.first));
        let durations: Vec<u16> = pkts.iter().map(|p| p.payload.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        assert!(
            pkts[4..]
                .iter()
                .all(|p| p.payload.end && p.payload.event == 11)
        );
        assert!(tone.is_done());
        assert_eq!((tone.packets(), tone.length()), (7, 800));
        // Our own packets parse back to the digit, once.
        let mut rx = DtmfReceiver::new(8000);
        let t = Instant::now();
        let got: Vec<_> = pkts
            .iter()
            .flat_map(|p| rx.on_packet(t, 42, &p.payload.encode()))
            .collect();
        assert_eq!(
            got,
            vec![Digit {
                digit: '#',
                duration_ms: 100
            }]
        );
    }

    #[test]
    fn digits_map_both_ways() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(event_for_digit(c), Some(i as u8));
            assert_eq!(digit_for_event(i as u8), Some(c));
        }
        assert_eq!(event_for_digit('x'), None);
        assert_eq!(event_for_digit('a'), Some(12));
    }
}
