//! Webhooks: the daemon's HTTP requests to the platform. One definition of
//! each body (what we send, what a voice webhook may answer), the
//! signature, and the sender with its timeouts and retries.
//!
//! Every request is JSON, POSTed with `X-Gateway-Event` (`voice`,
//! `call.status`) and, when `[webhooks] secret` is set,
//! `X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" keyed with the secret>` — the receiver recomputes it and
//! refuses old timestamps, so a captured request cannot be replayed.

use hmac::{Hmac, Mac};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// Whether `url` is an absolute http(s) URL we may POST to.
pub fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && reqwest::Url::parse(url).is_ok_and(|u| u.host().is_some())
}

/// `X-Gateway-Signature` for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a voice webhook is told about a new call (and a TwiML
/// `<Redirect>` or `<Dial action>` about the call so far).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoiceRequest {
    /// `voice`.
    pub event: &'static str,
    pub call_id: String,
    pub account: String,
    pub from: String,
    pub to: String,
    /// The number pattern that matched.
    pub number: String,
    pub trunk: Option<String>,
    pub sip_call_id: String,
    /// How the last `<Dial>` ended (`busy`, `no-answer`, `failed`,
    /// `canceled`), when a `<Dial action>` is asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dial_call_status: Option<String>,
    /// How the request is written (the number's `webhook_format`).
    #[serde(skip)]
    pub format: crate::store::WebhookFormat,
    /// GET or POST (TwiML's `method`; POST otherwise).
    #[serde(skip)]
    pub method: crate::twiml::Method,
    /// Twilio's `Direction`: `inbound` or `outbound-api`.
    #[serde(skip)]
    pub direction: &'static str,
    /// Twilio's `CallStatus`: `ringing` before the answer, then
    /// `in-progress`.
    #[serde(skip)]
    pub call_status: &'static str,
}

impl VoiceRequest {
    /// Twilio's voice request parameters
    /// (<https://www.twilio.com/docs/usage/webhooks/voice-webhooks>).
    pub fn twilio_params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("AccountSid", self.account.clone()),
            ("ApiVersion", "2010-04-01".to_string()),
            ("CallSid", self.call_id.clone()),
            ("CallStatus", self.call_status.to_string()),
            ("Called", self.to.clone()),
            ("Caller", self.from.clone()),
            ("Direction", self.direction.to_string()),
            ("From", self.from.clone()),
            ("SipCallId", self.sip_call_id.clone()),
            ("To", self.to.clone()),
        ];
        if let Some(s) = &self.dial_call_status {
            p.push(("DialCallStatus", s.clone()));
        }
        p
    }
}

/// `X-Twilio-Signature` of a request to `url` (with its query string)
/// carrying form `params` (none for GET): base64 of HMAC-SHA1 keyed with
/// the account's auth token over the URL followed by each parameter's
/// name and value, sorted by name
/// (<https://www.twilio.com/docs/usage/security#validating-requests>).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, String)]) -> String {
    use base64::Engine as _;
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(&b.1)));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A voice webhook's answer: what to do with the call.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum VoiceAnswer {
    /// Stream the call to this AI.
    Stream {
        url: String,
        dialect: Option<String>,
        params: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// Forward it to a `sip:` URI or an E.164 number (through the number's
    /// trunk).
    Forward { to: String },
    /// Refuse it with this final status (default 603 Decline).
    Reject { status: Option<u16> },
    /// End it at once: refused with 603 Decline.
    Hangup {},
    /// A TwiML document's verbs (the answer's content type was XML).
    #[serde(skip)]
    Twiml(Vec<crate::twiml::Verb>),
}

/// Why a voice webhook's answer cannot be acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnswer {
    #[error("stream url must be ws:// or wss://")]
    StreamUrl,
    #[error("stream params must be strings")]
    StreamParams,
    #[error("forward to must be an E.164 number or a sip: URI")]
    ForwardTo,
    #[error("reject status must be 4xx, 5xx or 6xx")]
    RejectStatus,
}

impl VoiceAnswer {
    /// Checks what the daemon acts on; the error says why.
    pub fn check(self) -> Result<VoiceAnswer, InvalidAnswer> {
        match &self {
            VoiceAnswer::Stream { url, params, .. } => {
                if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.len() > 2048 {
                    return Err(InvalidAnswer::StreamUrl);
                }
                if params
                    .as_ref()
                    .is_some_and(|p| p.values().any(|v| !v.is_string()))
                {
                    return Err(InvalidAnswer::StreamParams);
                }
            }
            VoiceAnswer::Forward { to } => {
                let number = crate::e164::normalize_e164(to).is_some() && !to.starts_with("sip:");
                let uri = to.starts_with("sip:")
                    && to.len() <= 256
                    && !to.chars().any(|c| {
                        c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',')
                    });
                if !(number || uri) {
                    return Err(InvalidAnswer::ForwardTo);
                }
            }
            VoiceAnswer::Reject { status: Some(s) } if !(400..700).contains(s) => {
                return Err(InvalidAnswer::RejectStatus);
            }
            _ => {}
        }
        Ok(self)
    }
}

/// A call's status change, for its status webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusEvent {
    /// `call.status`.
    pub event: &'static str,
    pub call_id: String,
    /// `ringing`, `in-progress`, `completed`, `busy`, `no-answer`,
    /// `failed` or `canceled`.
    pub status: String,
    pub direction: String,
    pub from: String,
    pub to: String,
    /// Unix ms of the change.
    pub at: i64,
    pub sip_status: Option<u16>,
    pub end_cause: Option<String>,
    pub duration_ms: Option<i64>,
    /// How the request is written (the call's number's `webhook_format`).
    #[serde(skip)]
    pub format: crate::store::WebhookFormat,
    /// The call's account: Twilio's `AccountSid`, whose token signs.
    #[serde(skip)]
    pub account: String,
    /// 0 for the call's first event, then 1, 2… (Twilio's
    /// `SequenceNumber`).
    #[serde(skip)]
    pub sequence: u32,
}

impl StatusEvent {
    /// Twilio's status callback parameters
    /// (<https://www.twilio.com/docs/voice/api/call-resource#statuscallback>).
    pub fn twilio_params(&self) -> Vec<(&'static str, String)> {
        let direction = if self.direction == "outbound" {
            "outbound-api"
        } else {
            "inbound"
        };
        let mut p = vec![
            ("AccountSid", self.account.clone()),
            ("ApiVersion", "2010-04-01".to_string()),
            ("CallSid", self.call_id.clone()),
            ("CallStatus", self.status.clone()),
            ("CallbackSource", "call-progress-events".to_string()),
            ("Called", self.to.clone()),
            ("Caller", self.from.clone()),
            ("Direction", direction.to_string()),
            ("From", self.from.clone()),
            ("SequenceNumber", self.sequence.to_string()),
            ("Timestamp", rfc2822(self.at)),
            ("To", self.to.clone()),
        ];
        if let Some(s) = self.sip_status {
            p.push(("SipResponseCode", s.to_string()));
        }
        if let Some(ms) = self.duration_ms {
            // Whole seconds, rounded up as Twilio bills them.
            p.push(("CallDuration", ((ms.max(0) + 999) / 1000).to_string()));
        }
        p
    }
}

/// Unix ms as RFC 2822 text in UTC (`Mon, 16 Aug 2010 03:45:01 +0000`),
/// as Twilio writes `Timestamp`.
pub fn rfc2822(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An SMS to one of our numbers, for the number's SMS webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageEvent {
    /// `message.received`.
    pub event: &'static str,
    pub message_id: String,
    pub account: String,
    pub from: String,
    pub to: String,
    pub body: String,
    /// Unix ms.
    pub at: i64,
}

impl MessageEvent {
    pub fn received(m: &crate::store::MessageRecord) -> MessageEvent {
        MessageEvent {
            event: "message.received",
            message_id: m.id.clone(),
            account: m.account_id.clone(),
            from: m.from_number.clone(),
            to: m.to_number.clone(),
            body: m.body.clone(),
            at: m.created_at,
        }
    }
}

/// A recording that is written (or failed), for its status callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordingEvent {
    /// `recording.completed` or `recording.failed`.
    pub event: &'static str,
    pub recording_id: String,
    pub call_id: String,
    pub account: String,
    pub duration_ms: i64,
    pub bytes: i64,
    /// Where to download it (the API's path).
    pub url: String,
    pub error: Option<String>,
}

impl RecordingEvent {
    pub fn of(r: &crate::store::RecordingRecord) -> RecordingEvent {
        RecordingEvent {
            event: if r.error.is_some() {
                "recording.failed"
            } else {
                "recording.completed"
            },
            recording_id: r.id.clone(),
            call_id: r.call_id.clone(),
            account: r.account_id.clone(),
            duration_ms: r.duration_ms,
            bytes: r.bytes,
            url: format!("/v1/recordings/{}/audio", r.id),
            error: r.error.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("answered {0}")]
    Status(u16),
    #[error("answer is not a valid action: {0}")]
    Answer(String),
    /// An answer that parses but cannot be acted on.
    #[error("answer is not a valid action: {0}")]
    Invalid(InvalidAnswer),
    /// A TwiML answer refused: what it asked that is not carried out.
    #[error("{0}")]
    Twiml(crate::twiml::TwimlError),
    /// A `twilio`-format request whose account has no auth token to sign
    /// it with.
    #[error("the account has no auth token to sign a twilio-format request")]
    NoAuthToken,
}

/// The host of a `sip:`/`sips:` URI (`sip:user@host:port;params`), if
/// the text is one.
fn sip_host(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?', '>']).next()?;
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next();
    }
    hostport.split(':').next()
}

/// What in TwiML `verbs` the tenants' target policy refuses, if anything:
/// stream URLs and `<Dial><Sip>` hosts. (`<Redirect>` and `action` URLs
/// are checked when they are fetched.)
pub fn twiml_target_refused(
    targets: &crate::targets::TargetPolicy,
    verbs: &[crate::twiml::Verb],
) -> Option<crate::targets::Refused> {
    verbs.iter().find_map(|v| match v {
        crate::twiml::Verb::Connect(s) | crate::twiml::Verb::Start(s) => {
            targets.check_url(&s.url).err()
        }
        crate::twiml::Verb::Dial(crate::twiml::Dial {
            target: crate::twiml::DialTarget::Sip(uri),
            ..
        }) => sip_host(uri).and_then(|h| targets.check_host(h).err()),
        _ => None,
    })
}

/// Resolves webhook hosts and keeps only the addresses the target policy
/// allows: a name that resolves inward is refused when it is used.
struct GuardedResolver(crate::targets::TargetPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.map_or_else(
                    || format!("{host} resolved to no address"),
                    |e| format!("{host}: {e}"),
                );
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// One call's status events waiting for delivery.
type StatusQueue = tokio::sync::mpsc::UnboundedSender<(String, StatusEvent)>;

/// A background webhook's body, as its format writes it.
enum Payload<'a> {
    /// The gateway's JSON, with its `X-Gateway-Event`.
    Json { event: &'a str, body: Vec<u8> },
    /// Twilio's form fields, signed with the account's token.
    Twilio {
        params: Vec<(&'static str, String)>,
        token: String,
    },
}

/// Sends webhooks; cheap to clone.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    targets: crate::targets::TargetPolicy,
    secret: Option<String>,
    requests: IntCounterVec,
    /// Per call: the queue its status events wait in.
    queues: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, StatusQueue>>>,
    /// Where `twilio`-format status events find their account's token.
    tokens: Option<std::sync::Arc<dyn crate::store::Store>>,
}

/// Largest voice-webhook answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Status webhooks are tried this many times, waiting 1, 2, 4… s between.
pub const STATUS_ATTEMPTS: u32 = 5;

impl WebhookSender {
    /// `targets`: where webhooks (and what their answers name) may point;
    /// names are checked as they resolve, IP literals before sending.
    pub fn new(
        secret: Option<String>,
        targets: crate::targets::TargetPolicy,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        // rustls needs a process-wide crypto provider; the daemon's
        // WebSocket client uses ring too. Installed once; a second call
        // finds it there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_webhook_requests_total",
                "Webhook requests by kind (voice, status, message) and outcome (ok, error, timeout, bad_answer)",
            ),
            &["kind", "outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        // Every series exists from the start, so dashboards and alerts see
        // zeros on a node that sent no webhook yet, not absence.
        for (kind, outcomes) in [
            ("voice", &["ok", "error", "timeout", "bad_answer"][..]),
            ("status", &["ok", "error"][..]),
            ("message", &["ok", "error"][..]),
            ("recording", &["ok", "error"][..]),
        ] {
            for outcome in outcomes {
                requests.with_label_values(&[kind, outcome]);
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voice-gateway/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(GuardedResolver(targets.clone())))
            // An HTTP(S)_PROXY in the environment would connect for us,
            // past the resolver's check.
            .no_proxy()
            .build()
            .map_err(|e| prometheus::Error::Msg(format!("webhook client: {e}")))?;
        Ok(WebhookSender {
            client,
            targets,
            secret: secret.filter(|s| !s.is_empty()),
            requests,
            queues: Default::default(),
            tokens: None,
        })
    }

    /// Status events in the `twilio` format are signed with their
    /// account's auth token, read from `store` when each is sent.
    pub fn with_auth_tokens(mut self, store: std::sync::Arc<dyn crate::store::Store>) -> Self {
        self.tokens = Some(store);
        self
    }

    async fn post(
        &self,
        url: &str,
        event: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<reqwest::Response, WebhookError> {
        self.targets
            .check_url(url)
            .map_err(|e| WebhookError::Http(e.to_string()))?;
        let mut req = self
            .client
            .post(url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .header("X-Gateway-Event", event);
        if let Some(secret) = &self.secret {
            req = req.header(
                "X-Gateway-Signature",
                signature(secret, crate::auth::unix_now(), &body),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| WebhookError::Http(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(WebhookError::Status(resp.status().as_u16()));
        }
        Ok(resp)
    }

    /// A `twilio`-format request: Twilio's form fields `params`, in the
    /// body (POST) or the query (GET), signed with the account's auth
    /// token.
    async fn send_twilio(
        &self,
        url: &str,
        method: crate::twiml::Method,
        params: &[(&'static str, String)],
        auth_token: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, WebhookError> {
        self.targets
            .check_url(url)
            .map_err(|e| WebhookError::Http(e.to_string()))?;
        let http = |e: reqwest::Error| WebhookError::Http(e.to_string());
        // Signed as sent: the receiver rebuilds the URL from the request
        // line and Host, normalised ("https://h" is sent as "https://h/").
        let url = reqwest::Url::parse(url).map_err(|e| WebhookError::Http(e.to_string()))?;
        let builder = match method {
            crate::twiml::Method::Post => {
                let sig = twilio_signature(auth_token, url.as_str(), params);
                self.client
                    .post(url)
                    .form(params)
                    .header("X-Twilio-Signature", sig)
            }
            crate::twiml::Method::Get => {
                let mut full = url;
                full.query_pairs_mut()
                    .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
                let sig = twilio_signature(auth_token, full.as_str(), &[]);
                self.client.get(full).header("X-Twilio-Signature", sig)
            }
        };
        let resp = builder
            .timeout(timeout)
            .header("Accept", "text/xml, application/json")
            .send()
            .await
            .map_err(http)?;
        if !resp.status().is_success() {
            return Err(WebhookError::Status(resp.status().as_u16()));
        }
        Ok(resp)
    }

    /// Asks a voice webhook what to do with a call, within `timeout`.
    /// `auth_token` signs `twilio`-format requests.
    pub async fn ask_voice(
        &self,
        url: &str,
        req: &VoiceRequest,
        auth_token: Option<&str>,
        timeout: Duration,
    ) -> Result<VoiceAnswer, WebhookError> {
        let res = async {
            let mut resp = match req.format {
                crate::store::WebhookFormat::Json => {
                    let body = serde_json::to_vec(req).unwrap_or_default();
                    self.post(url, "voice", body, timeout).await?
                }
                crate::store::WebhookFormat::Twilio => {
                    let token = auth_token.ok_or(WebhookError::NoAuthToken)?;
                    self.send_twilio(url, req.method, &req.twilio_params(), token, timeout)
                        .await?
                }
            };
            let xml = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.to_ascii_lowercase().contains("xml"));
            // A few hundred bytes are expected: read at most 64 KiB.
            let mut bytes = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| WebhookError::Http(e.to_string()))?
            {
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(WebhookError::Answer("answer larger than 64 KiB".into()));
                }
                bytes.extend_from_slice(&chunk);
            }
            let answer = if xml {
                let base =
                    reqwest::Url::parse(url).map_err(|e| WebhookError::Http(e.to_string()))?;
                VoiceAnswer::Twiml(crate::twiml::parse(&bytes, &base).map_err(WebhookError::Twiml)?)
            } else {
                serde_json::from_slice::<VoiceAnswer>(&bytes)
                    .map_err(|e| WebhookError::Answer(e.to_string()))?
                    .check()
                    .map_err(WebhookError::Invalid)?
            };
            // What the answer points at obeys the tenants' target policy.
            let refused = match &answer {
                VoiceAnswer::Stream { url, .. } => self.targets.check_url(url).err(),
                VoiceAnswer::Forward { to } => {
                    sip_host(to).and_then(|h| self.targets.check_host(h).err())
                }
                VoiceAnswer::Twiml(verbs) => twiml_target_refused(&self.targets, verbs),
                _ => None,
            };
            match refused {
                Some(e) => Err(WebhookError::Answer(e.to_string())),
                None => Ok(answer),
            }
        }
        .await;
        let outcome = match &res {
            Ok(_) => "ok",
            Err(WebhookError::Answer(_) | WebhookError::Invalid(_) | WebhookError::Twiml(_)) => {
                "bad_answer"
            }
            Err(WebhookError::Http(e)) if e.contains("timed out") => "timeout",
            Err(_) => "error",
        };
        self.requests.with_label_values(&["voice", outcome]).inc();
        res
    }

    /// Delivers a status event in the background, retrying with backoff.
    /// A call's events leave one at a time, in order: each call has its
    /// own queue, which ends with the call's final status.
    pub fn deliver_status(&self, url: String, ev: StatusEvent) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let last = ev.end_cause.is_some();
        let call = ev.call_id.clone();
        let tx = queues.entry(call.clone()).or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, StatusEvent)>();
            let me = self.clone();
            tokio::spawn(async move {
                while let Some((url, ev)) = rx.recv().await {
                    let last = ev.end_cause.is_some();
                    me.deliver_one(&url, &ev).await;
                    if last {
                        break;
                    }
                }
            });
            tx
        });
        let _ = tx.send((url, ev));
        if last {
            queues.remove(&call);
        }
    }

    async fn deliver_one(&self, url: &str, ev: &StatusEvent) {
        let payload = match ev.format {
            crate::store::WebhookFormat::Json => Payload::Json {
                event: "call.status",
                body: serde_json::to_vec(ev).unwrap_or_default(),
            },
            crate::store::WebhookFormat::Twilio => {
                let token = match &self.tokens {
                    Some(store) => store.account_auth_token(&ev.account).await,
                    None => Ok(None),
                };
                match token {
                    Ok(Some(token)) => Payload::Twilio {
                        params: ev.twilio_params(),
                        token,
                    },
                    Ok(None) | Err(_) => {
                        self.requests.with_label_values(&["status", "error"]).inc();
                        tracing::warn!(%url, call = %ev.call_id, account = %ev.account,
                            "status webhook not sent: no auth token to sign it");
                        return;
                    }
                }
            }
        };
        if !self.post_retried(url, "status", &payload).await {
            tracing::warn!(%url, call = %ev.call_id, status = %ev.status, "status webhook given up");
        }
    }

    /// Delivers an SMS to the number's webhook in the background, retried.
    pub fn deliver_message(&self, url: String, ev: MessageEvent) {
        let me = self.clone();
        tokio::spawn(async move {
            let payload = Payload::Json {
                event: ev.event,
                body: serde_json::to_vec(&ev).unwrap_or_default(),
            };
            if !me.post_retried(&url, "message", &payload).await {
                tracing::warn!(%url, message = %ev.message_id, "SMS webhook given up");
            }
        });
    }

    /// Delivers a recording's event in the background, retried.
    pub fn deliver_recording(&self, url: String, ev: RecordingEvent) {
        let me = self.clone();
        tokio::spawn(async move {
            let payload = Payload::Json {
                event: ev.event,
                body: serde_json::to_vec(&ev).unwrap_or_default(),
            };
            if !me.post_retried(&url, "recording", &payload).await {
                tracing::warn!(%url, recording = %ev.recording_id, "recording webhook given up");
            }
        });
    }

    /// POSTs `body` up to [`STATUS_ATTEMPTS`] times, waiting 1, 2, 4… s
    /// between; whether it was delivered.
    async fn post_retried(&self, url: &str, kind: &str, payload: &Payload<'_>) -> bool {
        let mut wait = Duration::from_secs(1);
        let timeout = Duration::from_secs(5);
        for attempt in 1..=STATUS_ATTEMPTS {
            let sent = match payload {
                Payload::Json { event, body } => self.post(url, event, body.clone(), timeout).await,
                Payload::Twilio { params, token } => {
                    self.send_twilio(url, crate::twiml::Method::Post, params, token, timeout)
                        .await
                }
            };
            match sent {
                Ok(_) => {
                    self.requests.with_label_values(&[kind, "ok"]).inc();
                    return true;
                }
                Err(e) => {
                    self.requests.with_label_values(&[kind, "error"]).inc();
                    tracing::info!(%url, attempt, error = %e, "webhook not delivered");
                }
            }
            if attempt < STATUS_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec
        assert_eq!(
            signature("whsec", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032"
        );
        assert_ne!(
            signature("whsec", 1_700_000_000, b"x"),
            signature("whsec", 1_700_000_001, b"x")
        );
    }

    #[test]
    fn twilio_signature_matches_twilios_documented_example() {
        // https://www.twilio.com/docs/usage/security#validating-requests
        let params = [
            ("CallSid", "CA1234567890ABCDE".to_string()),
            ("Caller", "+12349013030".to_string()),
            ("Digits", "1234".to_string()),
            ("From", "+12349013030".to_string()),
            ("To", "+18005551212".to_string()),
        ];
        let mut shuffled = params.clone();
        shuffled.reverse();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &shuffled),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert_ne!(
            twilio_signature("12346", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn timestamps_are_rfc_2822_in_utc() {
        // date -u -R -d @1281930301
        assert_eq!(
            rfc2822(1_281_930_301_000),
            "Mon, 16 Aug 2010 03:45:01 +0000"
        );
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // date -u -R -d @1709210096 (a leap day)
        assert_eq!(
            rfc2822(1_709_210_096_999),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
    }

    #[test]
    fn voice_answers_parse_and_are_checked() {
        let p = |s: &str| {
            serde_json::from_str::<VoiceAnswer>(s)
                .map_err(|e| e.to_string())
                .and_then(|a| a.check().map_err(|e| e.to_string()))
        };
        assert!(matches!(
            p(r#"{"action":"stream","url":"wss://ai/x","params":{"a":"b"}}"#),
            Ok(VoiceAnswer::Stream { .. })
        ));
        assert_eq!(
            p(r#"{"action":"forward","to":"+15550001111"}"#).unwrap(),
            VoiceAnswer::Forward {
                to: "+15550001111".into()
            }
        );
        assert_eq!(
            p(r#"{"action":"reject","status":486}"#).unwrap(),
            VoiceAnswer::Reject { status: Some(486) }
        );
        assert_eq!(p(r#"{"action":"hangup"}"#).unwrap(), VoiceAnswer::Hangup {});
        for bad in [
            r#"{"action":"stream","url":"http://x"}"#,
            r#"{"action":"stream","url":"ws://x","params":{"n":1}}"#,
            r#"{"action":"forward","to":"sip:a b"}"#,
            r#"{"action":"reject","status":200}"#,
            r#"{"action":"dance"}"#,
            r#"{"to":"+1"}"#,
            r#"[]"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(valid_url("https://hooks.example/voice"));
        assert!(!valid_url("ftp://x") && !valid_url("https://") && !valid_url("/relative"));
    }
}
