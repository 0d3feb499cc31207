//! The daemon's TOML configuration. Every key is documented in README.md
//! ("Configuration"); unknown keys are errors so a typo never silently
//! falls back to a default.

use crate::core::registrar::RegistrarConfig;
use crate::core::{CoreConfig, StreamSettings};
use crate::routing::{Pattern, RoutingTable};
use crate::sip::digest;
use crate::sip::timers::TimerConfig;
use crate::sip::transport::TransportKind;
use api::store::{Account, BlockedNumber, Number, RouteKind, SipUser, Trunk};
use media_userspace::aistream::Dialect;
use media_userspace::xdp_host::XdpSetting;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod env;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {problems}")]
    Invalid { path: String, problems: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: SipSection,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub stream: StreamSection,
    #[serde(default)]
    pub forward: ForwardSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub webhooks: WebhooksSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub recordings: RecordingsSection,
    #[serde(default)]
    pub accounts: Vec<AccountEntry>,
    #[serde(default)]
    pub trunks: Vec<TrunkEntry>,
    #[serde(default)]
    pub numbers: Vec<NumberEntry>,
    #[serde(default)]
    pub blocked: Vec<BlockedEntry>,
    #[serde(default)]
    pub sip_users: Vec<SipUserEntry>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// Listeners as `udp:IP:PORT` / `tcp:IP:PORT` / `tls:IP:PORT` (IPv6:
    /// `udp:[::1]:5060`).
    pub listen: Vec<String>,
    /// The TLS listeners' certificate.
    pub tls: SipTlsSection,
    /// Address written in Via/Contact/SDP when a listener is bound to
    /// 0.0.0.0 or ::.
    pub advertised_ip: Option<IpAddr>,
    pub server_name: Option<String>,
    pub realm: String,
    /// Secret for stateless digest nonces; share it between nodes. Empty:
    /// a random secret per process (nonces do not survive a restart).
    pub auth_secret: String,
    pub nonce_lifetime_secs: u64,
    pub min_expires: u32,
    pub max_expires: u32,
    /// RFC 4028 Min-SE.
    pub min_session_expires: u32,
    /// RFC 3261 T1 in ms.
    pub t1_ms: u64,
    /// Largest message accepted on any transport (bytes).
    pub max_message_size: usize,
    /// Close an idle TCP connection after this many seconds.
    pub tcp_idle_timeout_secs: u64,
    /// Inbound TCP connections held at once.
    pub max_tcp_connections: usize,
    /// Inbound TCP connections held at once from one address.
    pub max_tcp_connections_per_source: usize,
    /// A message begun on a TCP connection must be whole within this many
    /// seconds, or the connection closes (slow senders).
    pub tcp_message_timeout_secs: u64,
    /// On SIGTERM/SIGINT: wait this long for calls to end, then hang up.
    pub drain_timeout_secs: u64,
    /// Signalling threads: 1 runs transports and the core on one thread
    /// (the cheapest per call); more spreads parsing and I/O.
    pub threads: usize,
    /// Answer UDP requests at the address and port they came from, as if
    /// every Via asked for `rport` (RFC 3581): what works through NAT and
    /// what load balancers expect. `false`: strict RFC 3261 §18.2.2, the
    /// source IP with the Via's sent-by port unless `rport` is present.
    pub symmetric_responses: bool,
    /// A request from a source that is no trunk and no registered user:
    /// `"reject"` (one stateless 403) or `"drop"` (no answer).
    pub unknown_sources: crate::core::UnknownSources,
    /// Transactions held at once; beyond, a stateless 503.
    pub max_transactions: usize,
    /// Calls and far legs held at once; beyond, a new INVITE gets 503.
    pub max_dialogs: usize,
    /// SIP messages (and TCP connections) per second one address that is
    /// no trunk may send, with bursts of twice that; beyond, they are
    /// dropped before the parse and counted (`source_rate`). 0: no limit.
    /// Trunks have their own `requests_per_sec`.
    pub source_requests_per_sec: u32,
    /// Addresses the per-source limit remembers (twice this at most).
    pub source_table_size: usize,
    /// Failed digest authentications allowed per source address (and per
    /// username) within `auth_failure_window_secs`; the next locks it out.
    pub auth_max_failures: u32,
    pub auth_failure_window_secs: u64,
    /// How long a lockout lasts: every request from a locked source, and
    /// every authentication as a locked username from addresses where it
    /// holds no binding, gets 403.
    pub auth_lockout_secs: u64,
    /// Contacts one SIP user may hold at once.
    pub max_bindings_per_user: usize,
    /// INVITEs from registered users must carry their digest credentials
    /// (407 challenge), not just come from a registered address.
    pub challenge_invites: bool,
    /// Digest challenges offered, in order: "SHA-256", "MD5".
    pub digest_algorithms: Vec<String>,
    /// The XDP SIP guard: with the XDP program attached (media.xdp), drop
    /// SIP datagrams on the first UDP listener's port in the kernel, from
    /// sources over `xdp_guard_rate_per_sec` (bursts of `xdp_guard_burst`,
    /// per CPU) and from sources the registrar locked out; trunks' IPv4
    /// networks pass unmetered.
    pub xdp_guard: bool,
    pub xdp_guard_rate_per_sec: u32,
    pub xdp_guard_burst: u32,
    /// Interfaces to attach the program to for the guard, besides the
    /// media interfaces (where SIP arrives on another NIC).
    pub xdp_guard_interfaces: Vec<String>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            tls: SipTlsSection::default(),
            advertised_ip: None,
            server_name: None,
            realm: "voice-gateway".into(),
            auth_secret: String::new(),
            nonce_lifetime_secs: 300,
            min_expires: 60,
            max_expires: 3600,
            min_session_expires: 90,
            t1_ms: 500,
            max_message_size: 65_535,
            tcp_idle_timeout_secs: 300,
            max_tcp_connections: 4096,
            max_tcp_connections_per_source: 64,
            tcp_message_timeout_secs: 10,
            drain_timeout_secs: 30,
            threads: 1,
            symmetric_responses: true,
            unknown_sources: crate::core::UnknownSources::Reject,
            max_transactions: 65_536,
            max_dialogs: 65_536,
            source_requests_per_sec: 100,
            source_table_size: 65_536,
            auth_max_failures: 10,
            auth_failure_window_secs: 60,
            auth_lockout_secs: 600,
            max_bindings_per_user: 10,
            challenge_invites: false,
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            xdp_guard: false,
            xdp_guard_rate_per_sec: 100,
            xdp_guard_burst: 200,
            xdp_guard_interfaces: Vec::new(),
        }
    }
}

/// `[sip.tls]`: the certificate chain and key the TLS listeners present,
/// PEM files read again when they change (checked every
/// `reload_interval_secs`) and on SIGHUP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipTlsSection {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub reload_interval_secs: u64,
}

impl Default for SipTlsSection {
    fn default() -> Self {
        SipTlsSection {
            cert_file: None,
            key_file: None,
            reload_interval_secs: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address RTP sockets bind to.
    pub bind_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// Media worker threads (0: one per CPU).
    pub workers: usize,
    /// Run the media workers on io_uring (tokio-uring) when the kernel
    /// allows it. Off by default: plain tokio sockets cost less CPU per
    /// stream call (README, "tokio-uring versus plain tokio").
    pub io_uring: bool,
    /// End a call when no RTP arrives for this many seconds.
    pub timeout_secs: u64,
    /// Kernel fast path for relayed legs: "auto" | "on" | "off".
    pub xdp: XdpSetting,
    /// Interfaces the XDP program attaches to (empty: every interface
    /// with an IPv4 route, loopback excepted).
    pub xdp_interfaces: Vec<String>,
    /// Send relayed UDP with a zero checksum (IPv4 allows it) instead of
    /// updating it: saves a few ns per packet.
    pub xdp_zero_udp_checksum: bool,
    /// Directory on a bpffs mount where the XDP program's links and maps
    /// are pinned, so offloaded legs keep flowing across a restart and the
    /// next run takes them over (empty: not pinned).
    pub xdp_pin_dir: String,
}

/// Calls on route `stream` (the AI's WebSocket).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// Answer the call once the socket is up, waiting this long at most.
    pub answer_timeout_ms: u64,
    /// SIP status for a call whose AI could not be reached in time
    /// (480 or 503 let the carrier try elsewhere).
    pub fallback_status: u16,
    /// A socket lost mid-call is reconnected within this window (the
    /// caller's audio is held meanwhile); then the call ends.
    pub reconnect_window_ms: u64,
    /// WebSocket ping interval; three silent intervals lose the socket.
    pub keepalive_secs: u64,
    /// Largest frame accepted from the AI (bytes); larger ones are
    /// counted and skipped.
    pub max_frame_bytes: usize,
}

/// Calls on route `forward` (the B2BUA).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSection {
    /// The far leg may ring this long before it is canceled and the
    /// caller gets 480 (cause `no_answer`).
    pub ring_timeout_secs: u64,
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            ring_timeout_secs: 30,
        }
    }
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            answer_timeout_ms: 5000,
            fallback_status: 503,
            reconnect_window_ms: 5000,
            keepalive_secs: 10,
            max_frame_bytes: 1 << 20,
        }
    }
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            port_min: 20_000,
            port_max: 40_000,
            workers: 0,
            io_uring: false,
            timeout_secs: 60,
            xdp: XdpSetting::Auto,
            xdp_interfaces: Vec::new(),
            xdp_zero_udp_checksum: false,
            xdp_pin_dir: "/sys/fs/bpf/voice-gateway".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite://path` (created if missing) or `postgres://…`; the
    /// DATABASE_URL environment variable overrides it.
    pub url: String,
    /// CDR events held in memory while the database is unreachable before
    /// new calls are refused with 503.
    pub cdr_queue_capacity: usize,
    /// This node's name among the nodes sharing the store: the bridged
    /// calls it leaves resumable are taken back only by a run with the
    /// same name. Empty: the host name (stable across restarts, and on
    /// Kubernetes with host networking the node's).
    pub node_id: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sqlite://./data/gateway.db".into(),
            cdr_queue_capacity: 100_000,
            node_id: String::new(),
        }
    }
}

/// `[cluster]`: how nodes sharing one PostgreSQL database see each other.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `host:port` where the other nodes reach this node's REST API (they
    /// pass it live-call actions on calls this node holds). Empty: the
    /// `api.listen` address, with `sip.advertised_ip` in place of an
    /// unspecified IP.
    pub api_address: String,
    /// Seconds between this node's heartbeats in the store.
    pub heartbeat_secs: u64,
    /// A node whose heartbeat has not changed for this long (on the
    /// observing node's own clock) is lost: its open calls are closed.
    pub lease_secs: u64,
    /// A lost node's resumable (bridged) calls wait this long for it to
    /// come back and take them over; then they are closed too and their
    /// call-limit slots released.
    pub resume_grace_secs: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            api_address: String::new(),
            heartbeat_secs: 5,
            lease_secs: 15,
            resume_grace_secs: 300,
        }
    }
}

impl Config {
    /// Where the other nodes reach this node's REST API, if it serves one.
    pub fn cluster_api_address(&self) -> Option<String> {
        if !self.cluster.api_address.is_empty() {
            return Some(self.cluster.api_address.clone());
        }
        let listen = self.api.listen?;
        if !listen.ip().is_unspecified() {
            return Some(listen.to_string());
        }
        // The advertised address, else the first SIP listener's own.
        let ip = self.sip.advertised_ip.or_else(|| {
            self.listeners()
                .ok()?
                .into_iter()
                .map(|l| l.addr.ip())
                .find(|ip| !ip.is_unspecified())
        })?;
        Some(SocketAddr::new(ip, listen.port()).to_string())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// HTTP listener for the REST API and /metrics.
    pub listen: Option<SocketAddr>,
    /// JWT signature algorithm: HS256/HS384/HS512 (with `jwt_secret`) or
    /// RS*, PS*, ES256, ES384, EdDSA (with `jwt_public_key_file`).
    pub jwt_algorithm: String,
    /// Shared secret for the HS* algorithms. Without a secret or public
    /// key, `/v1` is not served (only /metrics and /healthz).
    pub jwt_secret: Option<String>,
    /// PEM public key that verifies tokens (public-key algorithms).
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key `sip-daemon token` signs with (public-key algorithms).
    pub jwt_private_key_file: Option<PathBuf>,
    /// Required `aud` claim.
    pub jwt_audience: String,
    /// Required `iss` claim.
    pub jwt_issuer: String,
    /// Requests per second per account (0: unlimited), with this burst.
    pub account_rate: f64,
    pub account_burst: f64,
    /// Requests per second per client IP (0: unlimited), with this burst.
    pub ip_rate: f64,
    pub ip_burst: f64,
    /// Networks tenants may point webhooks, AI streams and forwards at
    /// although they are loopback, private, link-local or otherwise not
    /// public (refused by default), e.g. `["10.20.0.0/16"]` for an AI
    /// platform on the private network.
    pub allowed_target_networks: Vec<ipnet::IpNet>,
    /// A request (its body included) must be answered within this; beyond,
    /// 503 `timeout`.
    pub request_timeout_ms: u64,
    /// Requests in progress at once; beyond, 503 `overloaded` at once.
    pub max_concurrent_requests: usize,
    /// Peers (load balancers, ingress) whose `X-Forwarded-For` names the
    /// client for per-IP limits; other peers' headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: None,
            jwt_algorithm: "HS256".into(),
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_private_key_file: None,
            jwt_audience: "voice-gateway".into(),
            jwt_issuer: "voice-gateway".into(),
            account_rate: 200.0,
            account_burst: 400.0,
            ip_rate: 500.0,
            ip_burst: 1000.0,
            allowed_target_networks: Vec::new(),
            request_timeout_ms: 10_000,
            max_concurrent_requests: 512,
            trusted_proxies: Vec::new(),
            metrics_token: None,
        }
    }
}

impl ApiSection {
    /// Whether `/v1` is served.
    pub fn rest_enabled(&self) -> bool {
        self.jwt_secret.as_deref().is_some_and(|s| !s.is_empty())
            || self.jwt_public_key_file.is_some()
    }

    /// The token verifier for `/v1`.
    pub fn verifier(&self) -> Result<api::auth::Verifier, VerifierError> {
        let pem = match &self.jwt_public_key_file {
            Some(p) => Some(std::fs::read(p).map_err(|source| VerifierError::PublicKey {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        api::auth::Verifier::new(
            &self.jwt_algorithm,
            self.jwt_secret.as_deref(),
            pem.as_deref(),
            &self.jwt_audience,
            &self.jwt_issuer,
        )
        .map_err(VerifierError::Key)
    }
}

/// Why the `/v1` token verifier cannot be made from `[api]`.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("api.jwt_public_key_file {}: {source}", path.display())]
    PublicKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("api: {0}")]
    Key(#[source] api::auth::KeyError),
}

/// `[webhooks]`: requests the daemon makes to the platform.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// HMAC-SHA256 key of `X-Gateway-Signature` (unset: requests are not
    /// signed, and a warning says so at start).
    pub secret: Option<String>,
    /// How long a voice webhook may take to answer.
    pub voice_timeout_ms: u64,
    /// When a voice webhook fails: `"route"` (the number's own route) or
    /// `"reject"` (503).
    pub voice_on_failure: VoiceOnFailure,
}

/// What a call gets when its voice webhook fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceOnFailure {
    /// The number's own route.
    #[default]
    Route,
    /// 503.
    Reject,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            secret: None,
            voice_timeout_ms: 3000,
            voice_on_failure: VoiceOnFailure::Route,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// tracing filter, e.g. "info" or "sip_daemon=debug"; RUST_LOG overrides.
    pub level: String,
    /// "text" | "json".
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[recordings]`: where call recordings are written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsSection {
    /// A directory on this node (unset: recording is refused). Files are
    /// `<dir>/<account>/<recording id>.wav`.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Numbers and prefixes the account may claim over REST itself.
    #[serde(default)]
    pub number_ranges: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkEntry {
    pub name: String,
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    #[serde(default)]
    pub outbound_address: Option<String>,
    /// `"udp"` (default), `"tcp"` or `"tls"`.
    #[serde(default = "default_transport")]
    pub transport: TransportKind,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// How calls from this trunk are transferred: "bridge" (default) or
    /// "refer".
    #[serde(default)]
    pub transfer: Option<TrunkTransfer>,
    /// The only account that may send through it (unset: every account).
    #[serde(default)]
    pub account: Option<String>,
    /// SIP messages per second its networks may send together (a burst
    /// of twice that); unset: no limit.
    #[serde(default)]
    pub requests_per_sec: Option<u32>,
    /// With `transport = "tls"`: `server_name`, `ca_file`,
    /// `client_cert_file`, `client_key_file`.
    #[serde(default)]
    pub tls: api::store::TrunkTls,
    /// `"rtp"`, `"srtp"` or `"srtp-optional"` (default).
    #[serde(default)]
    pub media_security: api::store::MediaSecurity,
    /// SDES keys may cross this trunk's signalling in clear (UDP, TCP).
    #[serde(default)]
    pub srtp_cleartext_keying: bool,
}

fn default_transport() -> TransportKind {
    TransportKind::Udp
}

/// How a trunk's calls are transferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransfer {
    /// The gateway bridges the call to the transfer target itself.
    Bridge,
    /// The carrier is asked to (SIP REFER).
    Refer,
}

impl TrunkTransfer {
    /// The spelling the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            TrunkTransfer::Bridge => "bridge",
            TrunkTransfer::Refer => "refer",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberEntry {
    pub pattern: String,
    pub account: String,
    pub route: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub dialect: Option<String>,
    #[serde(default)]
    pub params: Option<toml::Table>,
    #[serde(default)]
    pub trunk: Option<String>,
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// Where the call goes when its route fails before an answer.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Asked at each call what to do with it (README, "Voice webhook").
    #[serde(default)]
    pub voice_webhook: Option<String>,
    /// Where inbound SMS to this number are POSTed.
    #[serde(default)]
    pub sms_webhook: Option<String>,
    /// `"rtp"`, `"srtp"` or `"srtp-optional"` (default): its callers'
    /// media, combined with their trunk's.
    #[serde(default)]
    pub media_security: api::store::MediaSecurity,
    /// `"json"` (default) or `"twilio"`: how its voice webhook requests
    /// are written (README, "TwiML").
    #[serde(default)]
    pub webhook_format: domain::model::WebhookFormat,
    /// Where its inbound calls' status changes are POSTed.
    #[serde(default)]
    pub status_webhook: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedEntry {
    pub account: String,
    /// Blocked caller (E.164 or prefix with `*`).
    pub caller: String,
    /// Only for this number pattern of the account.
    #[serde(default)]
    pub number: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipUserEntry {
    pub username: String,
    pub account: String,
    pub password: String,
}

/// A `sip.listen` entry that is no `transport:IP:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("sip.listen {0:?}: expected udp:IP:PORT or tcp:IP:PORT")]
    Form(String),
    #[error("sip.listen {0:?}: transport must be udp, tcp or tls")]
    Transport(String),
    #[error("sip.listen {listen:?}: {addr:?} is not IP:PORT")]
    Address { listen: String, addr: String },
}

/// A SIP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}

/// The rows the config file puts into the store at start-up.
#[derive(Clone, Debug, Default)]
pub struct Provisioning {
    pub accounts: Vec<Account>,
    pub trunks: Vec<Trunk>,
    pub numbers: Vec<Number>,
    pub blocked: Vec<BlockedNumber>,
    pub sip_users: Vec<SipUser>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let toml_error = |source| ConfigError::Toml {
            path: p.clone(),
            source,
        };
        let cfg: Config = if text.contains("${") {
            // Expanded before typing: `advertised_ip = "${NODE_IP}"` is an
            // address only once the variable is in.
            let mut value: toml::Value = toml::from_str(&text).map_err(toml_error)?;
            let problems = env::expand(&mut value, &|name| std::env::var(name).ok());
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    path: p,
                    problems: problems.join("; "),
                });
            }
            value.try_into().map_err(toml_error)?
        } else {
            toml::from_str(&text).map_err(toml_error)?
        };
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: p,
                problems: problems.join("; "),
            });
        }
        Ok(cfg)
    }

    /// Everything wrong with the file that TOML typing cannot catch.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster.heartbeat_secs == 0
            || self.cluster.lease_secs < 3 * self.cluster.heartbeat_secs
            || self.cluster.resume_grace_secs < self.cluster.lease_secs
        {
            out.push(
                "cluster.heartbeat_secs must be at least 1, cluster.lease_secs at least three times it, and cluster.resume_grace_secs at least the lease"
                    .into(),
            );
        }
        if !self.cluster.api_address.is_empty()
            && self.cluster.api_address.parse::<SocketAddr>().is_err()
        {
            out.push(format!(
                "cluster.api_address {:?} is not IP:PORT",
                self.cluster.api_address
            ));
        }
        match self.listeners() {
            Err(e) => out.push(e.to_string()),
            Ok(ls) => {
                let tls = ls.iter().any(|l| l.transport == TransportKind::Tls);
                let files = (&self.sip.tls.cert_file, &self.sip.tls.key_file);
                if tls && !matches!(files, (Some(_), Some(_))) {
                    out.push("a tls listener needs sip.tls.cert_file and sip.tls.key_file".into());
                }
                if files.0.is_some() != files.1.is_some() {
                    out.push("sip.tls.cert_file and sip.tls.key_file go together".into());
                }
            }
        }
        if self.sip.min_expires == 0 || self.sip.min_expires > self.sip.max_expires {
            out.push("sip.min_expires must be > 0 and <= sip.max_expires".into());
        }
        if self.sip.max_message_size < 1500 {
            out.push("sip.max_message_size must be at least 1500".into());
        }
        if self.media.port_min == 0 || self.media.port_min >= self.media.port_max {
            out.push("media.port_min must be > 0 and < media.port_max".into());
        }
        if self.api.rest_enabled()
            && let Err(e) = self.api.verifier()
        {
            out.push(e.to_string());
        }
        if self.api.account_rate < 0.0
            || self.api.ip_rate < 0.0
            || (self.api.account_rate > 0.0 && self.api.account_burst < 1.0)
            || (self.api.ip_rate > 0.0 && self.api.ip_burst < 1.0)
        {
            out.push("api rates must be >= 0 and bursts >= 1".into());
        }
        if self.webhooks.voice_timeout_ms == 0 || self.webhooks.voice_timeout_ms > 30_000 {
            out.push("webhooks.voice_timeout_ms must be 1–30000".into());
        }
        let accounts: Vec<&str> = self.accounts.iter().map(|a| a.id.as_str()).collect();
        let trunks: Vec<&str> = self.trunks.iter().map(|t| t.name.as_str()).collect();
        for t in &self.trunks {
            if let Some(a) = &t.account
                && !accounts.contains(&a.as_str())
            {
                out.push(format!("trunk {}: unknown account {a:?}", t.name));
            }
            if !t.tls.is_empty() && t.transport != TransportKind::Tls {
                out.push(format!("trunk {}: tls settings need transport tls", t.name));
            }
            if t.media_security == api::store::MediaSecurity::Srtp
                && t.transport != TransportKind::Tls
                && !t.srtp_cleartext_keying
            {
                out.push(format!(
                    "trunk {}: media_security srtp over {} needs srtp_cleartext_keying (SDES keys go over TLS only)",
                    t.name,
                    t.transport.label()
                ));
            }
            if t.tls.client_cert_file.is_some() != t.tls.client_key_file.is_some() {
                out.push(format!(
                    "trunk {}: tls.client_cert_file and tls.client_key_file go together",
                    t.name
                ));
            }
        }
        for a in &self.accounts {
            for r in a
                .number_ranges
                .iter()
                .filter(|r| Pattern::parse(r).is_none())
            {
                out.push(format!(
                    "account {}: number range {r:?} is not an E.164 number or prefix pattern",
                    a.id
                ));
            }
        }
        for n in &self.numbers {
            if Pattern::parse(&n.pattern).is_none() {
                out.push(format!(
                    "number {:?}: not an E.164 number or prefix pattern",
                    n.pattern
                ));
            }
            if !accounts.contains(&n.account.as_str()) {
                out.push(format!(
                    "number {:?}: unknown account {:?}",
                    n.pattern, n.account
                ));
            }
            match RouteKind::parse(&n.route) {
                None => out.push(format!(
                    "number {:?}: route must be echo, stream or forward",
                    n.pattern
                )),
                Some(RouteKind::Stream | RouteKind::Forward) if n.target.is_none() => out.push(
                    format!("number {:?}: route {} needs a target", n.pattern, n.route),
                ),
                Some(RouteKind::Stream) => {
                    let url = n.target.as_deref().unwrap_or_default();
                    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                        out.push(format!(
                            "number {:?}: stream target must be a ws:// or wss:// URL",
                            n.pattern
                        ));
                    }
                    if let Some(d) = &n.dialect
                        && Dialect::parse(d).is_none()
                    {
                        out.push(format!(
                            "number {:?}: dialect must be twilio, telnyx, plivo, exotel, vonage, jambonz, jambonz16, pcm, pcm8, pcm16 or pcm24",
                            n.pattern
                        ));
                    }
                }
                Some(RouteKind::Forward) => {
                    let target = n.target.as_deref().unwrap_or_default();
                    let user = self.sip_users.iter().any(|u| u.username == target);
                    if !user && crate::sip::Uri::parse(target).is_err() {
                        out.push(format!(
                            "number {:?}: forward target must be a sip: URI or one of our SIP users",
                            n.pattern
                        ));
                    }
                }
                _ => {}
            }
            if let Some(w) = &n.sms_webhook
                && !api::webhook::valid_url(w)
            {
                out.push(format!(
                    "number {:?}: sms_webhook must be an http:// or https:// URL",
                    n.pattern
                ));
            }
            if let Some(w) = &n.voice_webhook
                && !api::webhook::valid_url(w)
            {
                out.push(format!(
                    "number {:?}: voice_webhook must be an http:// or https:// URL",
                    n.pattern
                ));
            }
            if let Some(f) = &n.fallback {
                let user = self.sip_users.iter().any(|u| &u.username == f);
                if !user && crate::sip::Uri::parse(f).is_err() {
                    out.push(format!(
                        "number {:?}: fallback must be a sip: URI or one of our SIP users",
                        n.pattern
                    ));
                }
            }
            if let Some(t) = &n.trunk
                && !trunks.contains(&t.as_str())
            {
                out.push(format!("number {:?}: unknown trunk {t:?}", n.pattern));
            }
        }
        if !(400..700).contains(&self.stream.fallback_status) {
            out.push("stream.fallback_status must be a 4xx, 5xx or 6xx status".into());
        }
        for b in &self.blocked {
            if Pattern::parse(&b.caller).is_none() {
                out.push(format!(
                    "blocked caller {:?}: not an E.164 number or prefix pattern",
                    b.caller
                ));
            }
            if !accounts.contains(&b.account.as_str()) {
                out.push(format!(
                    "blocked caller {:?}: unknown account {:?}",
                    b.caller, b.account
                ));
            }
        }
        for u in &self.sip_users {
            if !accounts.contains(&u.account.as_str()) {
                out.push(format!(
                    "sip user {:?}: unknown account {:?}",
                    u.username, u.account
                ));
            }
        }
        let prov = self.provisioning();
        let (_, routing_problems) =
            RoutingTable::build(prov.trunks, prov.numbers, prov.blocked, prov.sip_users);
        out.extend(routing_problems);
        out
    }

    /// `sip.listen`, each entry parsed.
    pub fn listeners(&self) -> Result<Vec<Listener>, ListenError> {
        self.sip
            .listen
            .iter()
            .map(|l| {
                let (t, addr) = l
                    .split_once(':')
                    .ok_or_else(|| ListenError::Form(l.clone()))?;
                let transport = match t {
                    "udp" => TransportKind::Udp,
                    "tcp" => TransportKind::Tcp,
                    "tls" => TransportKind::Tls,
                    _ => return Err(ListenError::Transport(l.clone())),
                };
                let addr: SocketAddr = addr.parse().map_err(|_| ListenError::Address {
                    listen: l.clone(),
                    addr: addr.to_string(),
                })?;
                Ok(Listener { transport, addr })
            })
            .collect()
    }

    /// The store URL: DATABASE_URL wins over the file.
    pub fn store_url(&self) -> String {
        std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.store.url.clone())
    }

    /// [`StoreSection::node_id`], or the host name when it is empty.
    pub fn node_id(&self) -> String {
        if !self.store.node_id.is_empty() {
            return self.store.node_id.clone();
        }
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        match std::str::from_utf8(&buf[..len]) {
            Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
            _ => "localhost".into(),
        }
    }

    pub fn core_config(&self) -> CoreConfig {
        let mut c = CoreConfig {
            timers: TimerConfig::with_t1(Duration::from_millis(self.sip.t1_ms.max(1))),
            ..CoreConfig::default()
        };
        if let Some(s) = &self.sip.server_name {
            c.server_name = s.clone();
        }
        c.registrar = RegistrarConfig {
            realm: self.sip.realm.clone(),
            min_expires: self.sip.min_expires,
            max_expires: self.sip.max_expires,
            default_expires: self.sip.max_expires,
            max_bindings_per_user: self.sip.max_bindings_per_user.max(1),
            algorithms: self
                .sip
                .digest_algorithms
                .iter()
                .filter_map(|a| crate::sip::digest::Algorithm::parse(a))
                .collect(),
            guard: crate::core::auth_guard::AuthGuardConfig {
                max_failures: self.sip.auth_max_failures.max(1),
                window_secs: self.sip.auth_failure_window_secs.max(1),
                lockout_secs: self.sip.auth_lockout_secs,
                ..Default::default()
            },
        };
        c.challenge_invites = self.sip.challenge_invites;
        c.recordings_dir = self.recordings.dir.clone();
        c.targets = api::targets::TargetPolicy::new(self.api.allowed_target_networks.clone());
        if self.sip.auth_secret.is_empty() {
            // Nonces then only verify on this process: fine for one node,
            // but clustered nodes must share sip.auth_secret.
            c.auth_secret = rand::random::<[u8; 32]>().to_vec();
        } else {
            c.auth_secret = self.sip.auth_secret.as_bytes().to_vec();
        }
        c.nonce_lifetime_secs = self.sip.nonce_lifetime_secs;
        c.min_se = self.sip.min_session_expires;
        c.advertised_ip = self.advertised_ip();
        c.media_timeout = Duration::from_secs(self.media.timeout_secs.max(1));
        c.stream = StreamSettings {
            answer_timeout: Duration::from_millis(self.stream.answer_timeout_ms.max(1)),
            fallback_status: self.stream.fallback_status,
            reconnect_window: Duration::from_millis(self.stream.reconnect_window_ms),
            keepalive: Duration::from_secs(self.stream.keepalive_secs.max(1)),
            max_frame_bytes: self.stream.max_frame_bytes.max(1024),
        };
        c.voice_fallback_to_route = self.webhooks.voice_on_failure == VoiceOnFailure::Route;
        c.symmetric_responses = self.sip.symmetric_responses;
        c.unknown_sources = self.sip.unknown_sources;
        c.max_transactions = self.sip.max_transactions.max(1);
        c.max_dialogs = self.sip.max_dialogs.max(1);
        c.resume_node = Some(self.node_id());
        c.forward = crate::core::forward::ForwardSettings {
            ring_timeout: Duration::from_secs(self.forward.ring_timeout_secs.max(1)),
        };
        c
    }

    pub fn advertised_ip(&self) -> IpAddr {
        if let Some(ip) = self.sip.advertised_ip {
            return ip;
        }
        self.listeners()
            .ok()
            .and_then(|ls| {
                ls.iter()
                    .map(|l| l.addr.ip())
                    .find(|ip| !ip.is_unspecified())
            })
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// Store rows defined by the file.
    pub fn provisioning(&self) -> Provisioning {
        let realm = &self.sip.realm;
        Provisioning {
            accounts: self
                .accounts
                .iter()
                .map(|a| Account {
                    id: a.id.clone(),
                    name: a.name.clone().unwrap_or_else(|| a.id.clone()),
                    number_ranges: a
                        .number_ranges
                        .iter()
                        .filter_map(|r| Pattern::parse(r).map(|p| p.to_string()))
                        .collect(),
                })
                .collect(),
            trunks: self
                .trunks
                .iter()
                .map(|t| Trunk {
                    name: t.name.clone(),
                    source_cidrs: t.source_cidrs.clone(),
                    outbound_address: t.outbound_address.clone(),
                    transport: t.transport.label().to_string(),
                    username: t.username.clone(),
                    password: t.password.clone(),
                    max_calls: t.max_calls,
                    transfer: t.transfer.map(|t| t.as_str().to_string()),
                    account_id: t.account.clone(),
                    requests_per_sec: t.requests_per_sec,
                    tls: t.tls.clone(),
                    media_security: t.media_security,
                    srtp_cleartext_keying: t.srtp_cleartext_keying,
                })
                .collect(),
            numbers: self
                .numbers
                .iter()
                .filter_map(|n| {
                    Some(Number {
                        pattern: n.pattern.clone(),
                        account_id: n.account.clone(),
                        route: RouteKind::parse(&n.route)?,
                        target: n.target.clone(),
                        dialect: n.dialect.clone(),
                        params: n
                            .params
                            .as_ref()
                            .and_then(|p| serde_json::to_string(p).ok()),
                        trunk: n.trunk.clone(),
                        max_calls: n.max_calls,
                        fallback: n.fallback.clone(),
                        voice_webhook: n.voice_webhook.clone(),
                        sms_webhook: n.sms_webhook.clone(),
                        media_security: n.media_security,
                        webhook_format: n.webhook_format,
                        status_webhook: n.status_webhook.clone(),
                    })
                })
                .collect(),
            blocked: self
                .blocked
                .iter()
                .map(|b| BlockedNumber {
                    id: format!(
                        "cfg:{}:{}:{}",
                        b.account,
                        b.number.as_deref().unwrap_or("*all*"),
                        b.caller
                    ),
                    account_id: b.account.clone(),
                    number_pattern: b.number.clone(),
                    caller_pattern: b.caller.clone(),
                })
                .collect(),
            sip_users: self
                .sip_users
                .iter()
                .map(|u| SipUser {
                    username: u.username.clone(),
                    account_id: u.account.clone(),
                    realm: realm.clone(),
                    ha1_md5: digest::ha1(digest::Algorithm::Md5, &u.username, realm, &u.password),
                    ha1_sha256: digest::ha1(
                        digest::Algorithm::Sha256,
                        &u.username,
                        realm,
                        &u.password,
                    ),
                })
                .collect(),
        }
    }
}
