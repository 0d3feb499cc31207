//! Prometheus metrics of the signalling plane. No per-call or per-number
//! labels: label values come from small fixed sets.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests received, by method.
    pub sip_requests: IntCounterVec,
    /// Responses, by direction (sent/received) and class (1xx..6xx).
    pub sip_responses: IntCounterVec,
    /// Requests refused or dropped, by reason.
    pub rejections: IntCounterVec,
    /// Calls ended, by direction and outcome.
    pub calls: IntCounterVec,
    pub calls_active: IntGauge,
    pub registrations_active: IntGauge,
    pub transactions_active: IntGauge,
    pub tcp_connections: IntGauge,
    /// 1 while the node drains (refuses new calls), else 0.
    pub draining: IntGauge,
    /// Seconds from a call's INVITE (received, or sent for calls the
    /// gateway places) to its answer, by direction.
    pub call_setup: HistogramVec,
    /// Calls of nodes whose heartbeat lapsed, closed by this node.
    pub node_lost_calls: prometheus::IntCounter,
    /// Nodes sharing the store, by health (`healthy`, `lapsed`), as this
    /// node saw them at its last heartbeat.
    pub cluster_nodes: prometheus::IntGaugeVec,
    /// Cluster-wide call-limit reservations, by outcome (`granted`,
    /// `refused`, `error`).
    pub capacity_checks: IntCounterVec,
    /// Time one reservation takes in the store (the per-call cost of
    /// cluster-wide limits).
    pub capacity_seconds: prometheus::Histogram,
}

/// Call setup times span a quick automatic answer to a long ring.
const CALL_SETUP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0,
];

/// Registers `metric` (a static definition) on `registry` and returns it.
fn registered<M>(registry: &Registry, metric: Result<M, prometheus::Error>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let m = metric.expect("static metric definition");
    registry
        .register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

impl Metrics {
    pub fn new(registry: Registry) -> Metrics {
        Metrics {
            sip_requests: counter_vec(
                &registry,
                "gateway_sip_requests_total",
                "SIP requests received, by method.",
                &["method"],
            ),
            sip_responses: counter_vec(
                &registry,
                "gateway_sip_responses_total",
                "SIP responses, by direction (sent, received) and status class.",
                &["direction", "class"],
            ),
            rejections: counter_vec(
                &registry,
                "gateway_sip_rejections_total",
                "SIP messages refused or dropped, by reason.",
                &["reason"],
            ),
            calls: counter_vec(
                &registry,
                "gateway_calls_total",
                "Calls ended, by direction and outcome.",
                &["direction", "outcome"],
            ),
            calls_active: gauge(&registry, "gateway_calls_active", "Calls in progress."),
            registrations_active: gauge(
                &registry,
                "gateway_registrations_active",
                "Registrar bindings.",
            ),
            transactions_active: gauge(
                &registry,
                "gateway_sip_transactions_active",
                "SIP transactions in progress.",
            ),
            tcp_connections: gauge(
                &registry,
                "gateway_sip_tcp_connections",
                "Open SIP stream connections.",
            ),
            draining: gauge(
                &registry,
                "gateway_draining",
                "1 while the node drains and refuses new calls.",
            ),
            call_setup: {
                let h = registered(
                    &registry,
                    HistogramVec::new(
                        HistogramOpts::new(
                            "gateway_call_setup_seconds",
                            "Seconds from a call's INVITE to its answer, by direction.",
                        )
                        .buckets(CALL_SETUP_BUCKETS.to_vec()),
                        &["direction"],
                    ),
                );
                // Both series exist from the start: dashboards and alerts
                // see zeros, not absence, on a node that took no call yet.
                for d in ["inbound", "outbound"] {
                    h.with_label_values(&[d]);
                }
                h
            },
            node_lost_calls: registered(
                &registry,
                prometheus::IntCounter::new(
                    "gateway_node_lost_calls_total",
                    "Open calls of nodes whose heartbeat lapsed, closed by this node as node_lost.",
                ),
            ),
            cluster_nodes: {
                let g = registered(
                    &registry,
                    prometheus::IntGaugeVec::new(
                        Opts::new(
                            "gateway_cluster_nodes",
                            "Nodes sharing the store, by health (healthy, lapsed), at this node's last heartbeat.",
                        ),
                        &["health"],
                    ),
                );
                for health in ["healthy", "lapsed"] {
                    g.with_label_values(&[health]);
                }
                g
            },
            capacity_checks: {
                let c = counter_vec(
                    &registry,
                    "gateway_cluster_capacity_checks_total",
                    "Cluster-wide call-limit reservations in the store, by outcome (granted, refused, error).",
                    &["outcome"],
                );
                for outcome in ["granted", "refused", "error"] {
                    c.with_label_values(&[outcome]);
                }
                c
            },
            capacity_seconds: registered(
                &registry,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "gateway_cluster_capacity_seconds",
                        "Seconds one cluster-wide call-limit reservation takes in the store.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ]),
                ),
            ),
            registry,
        }
    }

    /// Metrics on a private registry (tests).
    pub fn unregistered() -> Metrics {
        Metrics::new(Registry::new())
    }

    pub fn reject(&self, reason: &str) {
        self.rejections.with_label_values(&[reason]).inc();
    }

    pub fn rejection_count(&self, reason: &str) -> u64 {
        self.rejections.with_label_values(&[reason]).get()
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

/// Exposes the media workers' atomic counters at scrape time.
struct MediaCollector {
    stats: std::sync::Arc<media_userspace::engine::MediaStats>,
    descs: Vec<prometheus::core::Desc>,
}

const MEDIA_METRICS: &[(&str, &str, bool)] = &[
    (
        "gateway_media_legs_active",
        "Media legs open (userspace).",
        false,
    ),
    (
        "gateway_rtp_rx_packets_total",
        "RTP packets received by the media workers.",
        true,
    ),
    (
        "gateway_rtp_rx_bytes_total",
        "RTP bytes received by the media workers.",
        true,
    ),
    (
        "gateway_rtp_tx_packets_total",
        "RTP packets sent by the media workers.",
        true,
    ),
    (
        "gateway_rtp_tx_bytes_total",
        "RTP bytes sent by the media workers.",
        true,
    ),
    (
        "gateway_rtp_malformed_total",
        "Datagrams on media ports that were not RTP.",
        true,
    ),
    (
        "gateway_rtp_rejected_source_total",
        "RTP from a source the leg is not latched to.",
        true,
    ),
    (
        "gateway_media_bind_failures_total",
        "Media port binds that failed.",
        true,
    ),
    (
        "gateway_rtp_lost_total",
        "RTP packets of stream legs never received in time (jitter buffer).",
        true,
    ),
    (
        "gateway_rtp_late_total",
        "RTP packets of stream legs that came after their slot was played.",
        true,
    ),
    (
        "gateway_rtp_duplicate_total",
        "Duplicate RTP packets dropped by stream legs.",
        true,
    ),
    (
        "gateway_media_concealed_frames_total",
        "Lost caller packets replaced by concealment toward the AI.",
        true,
    ),
    (
        "gateway_dtmf_digits_total",
        "DTMF digits received from callers (RFC 4733 and SIP INFO).",
        true,
    ),
    (
        "gateway_rtcp_sent_total",
        "RTCP compound reports sent.",
        true,
    ),
    (
        "gateway_rtcp_received_total",
        "RTCP compound packets received.",
        true,
    ),
    (
        "gateway_xdp_attached",
        "1 when the XDP fast path is attached (media.xdp), else 0: relayed media in userspace.",
        false,
    ),
    (
        "gateway_xdp_pairs_active",
        "Relayed calls whose RTP the kernel (XDP) forwards now.",
        false,
    ),
    (
        "gateway_xdp_forwarded_packets_total",
        "RTP packets the XDP program forwarded (read every 2 s and at the end of a call).",
        true,
    ),
    (
        "gateway_xdp_forwarded_bytes_total",
        "Bytes of those packets (Ethernet header and IP packet).",
        true,
    ),
    (
        "gateway_xdp_offloads_total",
        "Relayed calls moved to the kernel fast path.",
        true,
    ),
    (
        "gateway_xdp_returns_total",
        "Relayed calls moved back to userspace (peer moved, re-INVITE).",
        true,
    ),
    (
        "gateway_xdp_failures_total",
        "Offloads the kernel refused (the call stayed in userspace).",
        true,
    ),
];

impl prometheus::core::Collector for MediaCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let values = [
            s.legs_active.load(Relaxed),
            s.rx_packets.load(Relaxed),
            s.rx_bytes.load(Relaxed),
            s.tx_packets.load(Relaxed),
            s.tx_bytes.load(Relaxed),
            s.malformed.load(Relaxed),
            s.rejected_source.load(Relaxed),
            s.bind_failures.load(Relaxed),
            s.rtp_lost.load(Relaxed),
            s.rtp_late.load(Relaxed),
            s.rtp_duplicate.load(Relaxed),
            s.concealed_frames.load(Relaxed),
            s.dtmf_digits.load(Relaxed),
            s.rtcp_sent.load(Relaxed),
            s.rtcp_received.load(Relaxed),
            s.xdp_attached.load(Relaxed),
            s.xdp_pairs_active.load(Relaxed),
            s.xdp_packets.load(Relaxed),
            s.xdp_bytes.load(Relaxed),
            s.xdp_offloads.load(Relaxed),
            s.xdp_returns.load(Relaxed),
            s.xdp_failures.load(Relaxed),
        ];
        let mut families: Vec<_> = MEDIA_METRICS
            .iter()
            .zip(values)
            .flat_map(|((name, help, counter), v)| {
                if *counter {
                    counter_family(name, help, v)
                } else {
                    IntGauge::new(*name, *help)
                        .map(|g| {
                            g.set(v as i64);
                            prometheus::core::Collector::collect(&g)
                        })
                        .unwrap_or_default()
                }
            })
            .collect();
        families.push(ms_histogram_family(JITTER_NAME, JITTER_HELP, &s.jitter));
        families.extend(legs_by_path(s));
        families.extend(srtp_families(&s.srtp));
        families
    }
}

const JITTER_NAME: &str = "gateway_rtp_jitter_seconds";
const JITTER_HELP: &str =
    "Receive jitter (RFC 3550 interarrival) of stream legs, observed when each leg ends.";

/// A media-side histogram as a Prometheus family (cumulative buckets, in
/// seconds).
fn ms_histogram_family<B: media_userspace::engine::MsBuckets>(
    name: &str,
    help: &str,
    h: &media_userspace::engine::MsHistogram<B>,
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
    use std::sync::atomic::Ordering::Relaxed;
    let (count, cumulative) = h.snapshot();
    let buckets = cumulative
        .into_iter()
        .map(|(ub, cumulative)| {
            let mut b = Bucket::default();
            b.set_upper_bound(ub / 1000.0);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut hist = Histogram::default();
    hist.set_sample_count(count);
    hist.set_sample_sum(h.sum_us.load(Relaxed) as f64 / 1e6);
    hist.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(hist);
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(MetricType::HISTOGRAM);
    f.set_metric(vec![m]);
    f
}

const LEGS_BY_PATH_NAME: &str = "gateway_media_legs_by_path";
const LEGS_BY_PATH_HELP: &str =
    "Media legs open, by where their packets are forwarded: xdp (in the kernel) or userspace.";

/// `gateway_media_legs_by_path{path}`: a relayed pair in the kernel is two
/// legs on path `xdp`; every other open leg is on `userspace`.
fn legs_by_path(s: &media_userspace::engine::MediaStats) -> Vec<prometheus::proto::MetricFamily> {
    use std::sync::atomic::Ordering::Relaxed;
    let xdp = 2 * s.xdp_pairs_active.load(Relaxed);
    let user = s.legs_active.load(Relaxed).saturating_sub(xdp);
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(LEGS_BY_PATH_NAME, LEGS_BY_PATH_HELP),
        &["path"],
    )
    .map(|g| {
        g.with_label_values(&["xdp"]).set(xdp as i64);
        g.with_label_values(&["userspace"]).set(user as i64);
        prometheus::core::Collector::collect(&g)
    })
    .unwrap_or_default()
}

const SRTP_PACKETS_NAME: &str = "gateway_srtp_packets_total";
const SRTP_PACKETS_HELP: &str = "SRTP and SRTCP packets the media workers protected or unprotected (authenticated), by direction.";
const SRTP_REJECTED_NAME: &str = "gateway_srtp_rejected_total";
const SRTP_REJECTED_HELP: &str = "SRTP and SRTCP packets refused, by reason: auth (authentication failed), replay, malformed, ssrc_limit, other.";

/// `gateway_srtp_packets_total{direction}` and
/// `gateway_srtp_rejected_total{reason}`.
fn srtp_families(s: &media_userspace::engine::SrtpStats) -> Vec<prometheus::proto::MetricFamily> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    if let Ok(c) = IntCounterVec::new(
        Opts::new(SRTP_PACKETS_NAME, SRTP_PACKETS_HELP),
        &["direction"],
    ) {
        c.with_label_values(&["protected"])
            .inc_by(s.protected.load(Relaxed));
        c.with_label_values(&["unprotected"])
            .inc_by(s.unprotected.load(Relaxed));
        out.extend(prometheus::core::Collector::collect(&c));
    }
    if let Ok(c) = IntCounterVec::new(
        Opts::new(SRTP_REJECTED_NAME, SRTP_REJECTED_HELP),
        &["reason"],
    ) {
        for (reason, v) in s.rejected() {
            c.with_label_values(&[reason]).inc_by(v);
        }
        out.extend(prometheus::core::Collector::collect(&c));
    }
    out
}

/// Registers the media counters of `stats` on `registry`.
pub fn register_media(
    registry: &Registry,
    stats: std::sync::Arc<media_userspace::engine::MediaStats>,
) -> Result<(), prometheus::Error> {
    let mut descs: Vec<_> = MEDIA_METRICS
        .iter()
        .map(|(name, help, _)| plain_desc(name, help))
        .collect::<Result<_, _>>()?;
    descs.push(plain_desc(JITTER_NAME, JITTER_HELP)?);
    for (name, help, label) in [
        (LEGS_BY_PATH_NAME, LEGS_BY_PATH_HELP, "path"),
        (SRTP_PACKETS_NAME, SRTP_PACKETS_HELP, "direction"),
        (SRTP_REJECTED_NAME, SRTP_REJECTED_HELP, "reason"),
    ] {
        descs.push(prometheus::core::Desc::new(
            name.into(),
            help.into(),
            vec![label.into()],
            Default::default(),
        )?);
    }
    registry.register(Box::new(MediaCollector { stats, descs }))
}

fn plain_desc(name: &str, help: &str) -> Result<prometheus::core::Desc, prometheus::Error> {
    prometheus::core::Desc::new(name.into(), help.into(), vec![], Default::default())
}

/// One counter's family with value `v`, built at scrape time.
fn counter_family(name: &str, help: &str, v: u64) -> Vec<prometheus::proto::MetricFamily> {
    prometheus::IntCounter::new(name, help)
        .map(|c| {
            c.inc_by(v);
            prometheus::core::Collector::collect(&c)
        })
        .unwrap_or_default()
}

/// Exposes the AI stream counters at scrape time.
struct StreamCollector {
    stats: std::sync::Arc<media_userspace::aistream::client::StreamStats>,
    descs: Vec<prometheus::core::Desc>,
}

const STREAM_COUNTERS: &[(&str, &str)] = &[
    (
        "gateway_ai_stream_connects_total",
        "AI WebSockets opened for calls.",
    ),
    (
        "gateway_ai_stream_connect_failures_total",
        "AI WebSockets that could not be opened.",
    ),
    (
        "gateway_ai_stream_reconnects_total",
        "AI WebSockets reopened after a loss mid-call.",
    ),
    (
        "gateway_ai_stream_lost_total",
        "AI streams that stayed lost for the whole reconnect window.",
    ),
    (
        "gateway_ai_stream_frames_out_total",
        "Frames sent to AI sockets.",
    ),
    (
        "gateway_ai_stream_frames_in_total",
        "Frames received from AI sockets.",
    ),
    (
        "gateway_ai_stream_dropped_to_ai_total",
        "Caller audio frames dropped because the AI did not keep up.",
    ),
    (
        "gateway_ai_stream_dropped_from_ai_total",
        "AI messages dropped because the media leg's queue was full.",
    ),
];

const STREAM_REJECTED: (&str, &str) = (
    "gateway_ai_stream_rejected_total",
    "Frames from the AI that were refused, by reason.",
);

impl prometheus::core::Collector for StreamCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let values = [
            s.connects.load(Relaxed),
            s.connect_failures.load(Relaxed),
            s.reconnects.load(Relaxed),
            s.lost.load(Relaxed),
            s.frames_out.load(Relaxed),
            s.frames_in.load(Relaxed),
            s.dropped_to_ai.load(Relaxed),
            s.dropped_from_ai.load(Relaxed),
        ];
        let mut out: Vec<prometheus::proto::MetricFamily> = STREAM_COUNTERS
            .iter()
            .zip(values)
            .flat_map(|((name, help), v)| counter_family(name, help, v))
            .collect();
        if let Ok(vec) =
            IntCounterVec::new(Opts::new(STREAM_REJECTED.0, STREAM_REJECTED.1), &["reason"])
        {
            for (reason, v) in s.rejections() {
                vec.with_label_values(&[reason]).inc_by(v);
            }
            out.extend(prometheus::core::Collector::collect(&vec));
        }
        out.push(ms_histogram_family(
            STREAM_CONNECT.0,
            STREAM_CONNECT.1,
            &s.connect_ms,
        ));
        out
    }
}

const STREAM_CONNECT: (&str, &str) = (
    "gateway_ai_stream_connect_seconds",
    "Seconds to open an AI WebSocket (TCP, TLS and upgrade), first opens and reopens.",
);

/// Registers the AI stream counters of `stats` on `registry`.
pub fn register_streams(
    registry: &Registry,
    stats: std::sync::Arc<media_userspace::aistream::client::StreamStats>,
) -> Result<(), prometheus::Error> {
    let mut descs = STREAM_COUNTERS
        .iter()
        .map(|(name, help)| plain_desc(name, help))
        .collect::<Result<Vec<_>, _>>()?;
    descs.push(prometheus::core::Desc::new(
        STREAM_REJECTED.0.to_string(),
        STREAM_REJECTED.1.to_string(),
        vec!["reason".to_string()],
        Default::default(),
    )?);
    descs.push(plain_desc(STREAM_CONNECT.0, STREAM_CONNECT.1)?);
    registry.register(Box::new(StreamCollector { stats, descs }))
}

/// The XDP SIP guard's counters, read from the kernel at scrape time.
const SIP_GUARD_COUNTERS: &[(&str, &str)] = &[
    (
        "gateway_xdp_sip_passed_total",
        "SIP datagrams the XDP guard metered and passed.",
    ),
    (
        "gateway_xdp_sip_trusted_total",
        "SIP datagrams from trunk networks the XDP guard passed unmetered.",
    ),
    (
        "gateway_xdp_sip_rate_dropped_total",
        "SIP datagrams the XDP guard dropped: their source was over its rate.",
    ),
    (
        "gateway_xdp_sip_denied_total",
        "SIP datagrams the XDP guard dropped: their source was denied.",
    ),
];

struct SipGuardCollector {
    path: std::sync::Arc<media_userspace::offload::XdpPath>,
    descs: Vec<prometheus::core::Desc>,
}

impl prometheus::core::Collector for SipGuardCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(c) = self.path.sip_guard(|g| g.counters()) else {
            return Vec::new();
        };
        SIP_GUARD_COUNTERS
            .iter()
            .zip([c.passed, c.trusted, c.rate_dropped, c.denied])
            .flat_map(|((name, help), v)| counter_family(name, help, v))
            .collect()
    }
}

/// Registers the XDP SIP guard's counters of `path` on `registry`.
pub fn register_sip_guard(
    registry: &Registry,
    path: std::sync::Arc<media_userspace::offload::XdpPath>,
) -> Result<(), prometheus::Error> {
    let descs = SIP_GUARD_COUNTERS
        .iter()
        .map(|(name, help)| plain_desc(name, help))
        .collect::<Result<Vec<_>, _>>()?;
    registry.register(Box::new(SipGuardCollector { path, descs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn media_legs_are_counted_by_path() {
        let registry = Registry::new();
        let stats = std::sync::Arc::new(media_userspace::engine::MediaStats::default());
        register_media(&registry, stats.clone()).expect("registered");
        // Two relayed pairs (four legs), one of them in the kernel, and a
        // stream leg.
        stats.legs_active.store(5, Relaxed);
        stats.xdp_pairs_active.store(1, Relaxed);
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .expect("encoded");
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("gateway_media_legs_by_path{path=\"xdp\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("gateway_media_legs_by_path{path=\"userspace\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("gateway_media_legs_active 5\n"));
    }
}
