//! Prometheus metrics of the signalling plane. No per-call or per-number
//! labels: label values come from small fixed sets.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

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
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
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
        ];
        MEDIA_METRICS
            .iter()
            .zip(values)
            .filter_map(|((name, help, counter), v)| {
                if *counter {
                    let c = prometheus::IntCounter::new(*name, *help).ok()?;
                    c.inc_by(v);
                    Some(prometheus::core::Collector::collect(&c))
                } else {
                    let g = IntGauge::new(*name, *help).ok()?;
                    g.set(v as i64);
                    Some(prometheus::core::Collector::collect(&g))
                }
            })
            .flatten()
            .collect()
    }
}

/// Registers the media counters of `stats` on `registry`.
pub fn register_media(
    registry: &Registry,
    stats: std::sync::Arc<media_userspace::engine::MediaStats>,
) -> Result<(), prometheus::Error> {
    let mut descs = Vec::new();
    for (name, help, _) in MEDIA_METRICS {
        descs.push(prometheus::core::Desc::new(
            name.to_string(),
            help.to_string(),
            vec![],
            Default::default(),
        )?);
    }
    registry.register(Box::new(MediaCollector { stats, descs }))
}
