//! Process-wide media counters and histograms, and how a leg's counts
//! are added to them.

use super::*;

/// Process-wide media counters (exported to Prometheus by the daemon).
#[derive(Debug, Default)]
pub struct MediaStats {
    pub legs_active: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub malformed: AtomicU64,
    pub rejected_source: AtomicU64,
    pub bind_failures: AtomicU64,
    /// Stream legs: RTP the jitter buffer gave up on, or got too late or
    /// twice; 20 ms frames concealed; DTMF digits; RTCP sent and read.
    pub rtp_lost: AtomicU64,
    pub rtp_late: AtomicU64,
    pub rtp_duplicate: AtomicU64,
    pub concealed_frames: AtomicU64,
    pub dtmf_digits: AtomicU64,
    pub rtcp_sent: AtomicU64,
    pub rtcp_received: AtomicU64,
    /// 1 when the XDP program is attached (set by the daemon).
    pub xdp_attached: AtomicU64,
    /// Relay pairs whose RTP the kernel forwards now.
    pub xdp_pairs_active: AtomicU64,
    /// RTP the XDP program forwarded (counted when polled or removed).
    pub xdp_packets: AtomicU64,
    pub xdp_bytes: AtomicU64,
    /// Pairs moved to the kernel; moved back (peer moved, re-INVITE).
    pub xdp_offloads: AtomicU64,
    pub xdp_returns: AtomicU64,
    /// Rules the kernel refused (the pair stayed in userspace).
    pub xdp_failures: AtomicU64,
    /// Receive jitter of stream legs (RFC 3550 §6.4.1), observed when a
    /// leg that received RTP closes.
    pub jitter: JitterHistogram,
    /// SRTP and SRTCP of every leg.
    pub srtp: SrtpStats,
}

/// SRTP packets protected and unprotected, and refusals by reason.
#[derive(Debug, Default)]
pub struct SrtpStats {
    pub protected: AtomicU64,
    pub unprotected: AtomicU64,
    pub auth_failed: AtomicU64,
    pub replayed: AtomicU64,
    pub malformed: AtomicU64,
    pub ssrc_limit: AtomicU64,
    pub other: AtomicU64,
}

impl SrtpStats {
    /// Adds what a leg counted since `published`, and moves `published`.
    pub fn publish(
        &self,
        now: crate::srtp::SrtpCounters,
        published: &mut crate::srtp::SrtpCounters,
    ) {
        let p = *published;
        for (total, n, b) in [
            (&self.protected, now.protected, p.protected),
            (&self.unprotected, now.unprotected, p.unprotected),
            (&self.auth_failed, now.auth_failed, p.auth_failed),
            (&self.replayed, now.replayed, p.replayed),
            (&self.malformed, now.malformed, p.malformed),
            (&self.ssrc_limit, now.ssrc_limit, p.ssrc_limit),
            (&self.other, now.other, p.other),
        ] {
            total.fetch_add(n.saturating_sub(b), Ordering::Relaxed);
        }
        *published = now;
    }

    /// Refusals by reason label (`gateway_srtp_rejected_total`).
    pub fn rejected(&self) -> [(&'static str, u64); 5] {
        use crate::srtp::SrtpError as E;
        [
            (E::Auth.label(), self.auth_failed.load(Ordering::Relaxed)),
            (E::Replay.label(), self.replayed.load(Ordering::Relaxed)),
            (E::Malformed.label(), self.malformed.load(Ordering::Relaxed)),
            (
                E::SsrcLimit.label(),
                self.ssrc_limit.load(Ordering::Relaxed),
            ),
            ("other", self.other.load(Ordering::Relaxed)),
        ]
    }
}

/// A histogram's fixed bucket bounds, in milliseconds (the last bucket,
/// +Inf, is the count).
pub trait MsBuckets {
    const MS: &'static [f64];
}

/// Per-leg receive jitter: 1 ms to 160 ms.
#[derive(Debug, Default)]
pub struct JitterBuckets;
impl MsBuckets for JitterBuckets {
    const MS: &'static [f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0];
}

/// Most buckets an [`MsHistogram`] holds.
pub(super) const MAX_BUCKETS: usize = 16;

/// A lock-free fixed-bucket histogram of milliseconds, published to
/// Prometheus by the daemon at scrape time.
#[derive(Debug)]
pub struct MsHistogram<B: MsBuckets> {
    /// Observations at or below each bound (not cumulative); the first
    /// `B::MS.len()` are used.
    buckets: [AtomicU64; MAX_BUCKETS],
    pub count: AtomicU64,
    /// Sum of observations in microseconds.
    pub sum_us: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: MsBuckets> Default for MsHistogram<B> {
    fn default() -> Self {
        const { assert!(B::MS.len() <= MAX_BUCKETS) };
        MsHistogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            _bounds: std::marker::PhantomData,
        }
    }
}

impl<B: MsBuckets> MsHistogram<B> {
    pub fn observe_ms(&self, ms: f64) {
        if let Some(i) = B::MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    /// The observation count and each bound (ms) with the observations at
    /// or below it, cumulative. The count is read first and the buckets
    /// clamped to it: an observation counted in its bucket but not yet in
    /// the count never shows as more observations than the count.
    pub fn snapshot(&self) -> (u64, Vec<(f64, u64)>) {
        let count = self.count.load(Ordering::Relaxed);
        let mut total = 0u64;
        let buckets = B::MS
            .iter()
            .zip(&self.buckets)
            .map(|(ub, n)| {
                total = total.saturating_add(n.load(Ordering::Relaxed));
                (*ub, total.min(count))
            })
            .collect();
        (count, buckets)
    }
}

/// Receive jitter of stream legs.
pub type JitterHistogram = MsHistogram<JitterBuckets>;

/// Adds a leg's SRTP counts to the totals; the first refusals of a leg
/// are logged once (a wrong key or a spoofer shows up in the log without
/// flooding it).
pub(super) fn publish_srtp(
    stats: &MediaStats,
    leg: LegId,
    now: crate::srtp::SrtpCounters,
    published: &mut crate::srtp::SrtpCounters,
) {
    if published.rejected() == 0 && now.rejected() > 0 {
        tracing::info!(
            leg,
            auth = now.auth_failed,
            replay = now.replayed,
            malformed = now.malformed,
            ssrc_limit = now.ssrc_limit,
            other = now.other,
            "SRTP packets refused on this leg (all counted in gateway_srtp_rejected_total; logged once per leg)"
        );
    }
    stats.srtp.publish(now, published);
}

/// Adds what a leg counted since `published` to the process totals.
pub(super) fn add_counter_deltas(stats: &MediaStats, c: &LegCounters, published: &LegCounters) {
    let p = published;
    for (total, now, before) in [
        (&stats.rx_packets, c.rx_packets, p.rx_packets),
        (&stats.rx_bytes, c.rx_bytes, p.rx_bytes),
        (&stats.tx_packets, c.tx_packets, p.tx_packets),
        (&stats.tx_bytes, c.tx_bytes, p.tx_bytes),
        (&stats.malformed, c.malformed, p.malformed),
        (&stats.rejected_source, c.rejected_source, p.rejected_source),
    ] {
        total.fetch_add(now - before, Ordering::Relaxed);
    }
}
