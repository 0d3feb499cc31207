//! The socket edge of an AI stream: a WebSocket client (tokio-tungstenite,
//! `ws://` or `wss://` with rustls) that runs beside its media leg on the
//! same worker thread.
//!
//! The leg and the socket task share two queues ([`link`]): caller audio
//! to the AI is bounded and drops its oldest frames when the AI does not
//! keep up, so media never waits on the socket; AI messages to the leg are
//! bounded too. A socket lost mid-call is reconnected with the same
//! streamSid within the spec's window while caller audio queues; the AI
//! closing the socket ends the stream.

use super::{DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi, codec_for};
use crossbeam_channel::{Receiver, Sender};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Process-wide AI stream counters (exported by the daemon).
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub reconnects: AtomicU64,
    /// Streams ended because the socket was lost for the whole window.
    pub lost: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_in: AtomicU64,
    /// Caller audio dropped because the AI did not keep up.
    pub dropped_to_ai: AtomicU64,
    /// AI messages dropped because the leg's queue was full.
    pub dropped_from_ai: AtomicU64,
    pub malformed_json: AtomicU64,
    pub unknown_event: AtomicU64,
    pub bad_base64: AtomicU64,
    pub oversized: AtomicU64,
    pub frame_size: AtomicU64,
    pub unexpected_binary: AtomicU64,
    pub bad_digits: AtomicU64,
    pub bad_target: AtomicU64,
    /// Time to open an AI WebSocket (TCP, TLS, upgrade), first opens and
    /// reopens alike.
    pub connect_ms: crate::engine::MsHistogram<ConnectBuckets>,
}

/// AI WebSocket open times: 5 ms (same host) to 5 s (the answer timeout's
/// order).
#[derive(Debug, Default)]
pub struct ConnectBuckets;
impl crate::engine::MsBuckets for ConnectBuckets {
    const MS: &'static [f64] = &[
        5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    ];
}

impl StreamStats {
    fn count(&self, e: &ProtocolError) {
        let c = match e {
            ProtocolError::Json(_) => &self.malformed_json,
            ProtocolError::UnknownEvent(_) => &self.unknown_event,
            ProtocolError::Base64 => &self.bad_base64,
            ProtocolError::Oversized(_) => &self.oversized,
            ProtocolError::FrameSize(_) => &self.frame_size,
            ProtocolError::UnexpectedBinary => &self.unexpected_binary,
            ProtocolError::BadDigits(_) => &self.bad_digits,
            ProtocolError::BadTarget(_) => &self.bad_target,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Rejected AI frames by reason, for metrics.
    pub fn rejections(&self) -> [(&'static str, u64); 8] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("malformed_json", g(&self.malformed_json)),
            ("unknown_event", g(&self.unknown_event)),
            ("bad_base64", g(&self.bad_base64)),
            ("oversized", g(&self.oversized)),
            ("frame_size", g(&self.frame_size)),
            ("unexpected_binary", g(&self.unexpected_binary)),
            ("bad_digits", g(&self.bad_digits)),
            ("bad_target", g(&self.bad_target)),
        ]
    }
}

/// The reason of [`StreamEvent::Ended`] when the AI sent `hangup`.
pub const AI_HANGUP: &str = "ai_hangup";

/// What the socket task reports about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The socket is up and `start` was sent: the call may be answered.
    Connected,
    /// The first connection failed.
    Failed(String),
    /// The stream is over on the AI side (closed, or lost too long).
    Ended(String),
    /// The AI asks for the caller to be transferred to this target (its
    /// `transfer` event; the call control answers with `transferResult`).
    Transfer(String),
}

/// The media leg's end of the link.
pub struct LegSide {
    to_ai: Sender<ToAi>,
    /// Same queue, for dropping the oldest frame when full.
    to_ai_oldest: Receiver<ToAi>,
    to_ai_cap: usize,
    from_ai: Receiver<FromAi>,
    wake_socket: Arc<Notify>,
    /// Notified when AI messages arrive.
    pub wake_leg: Arc<Notify>,
    stop: Option<oneshot::Sender<String>>,
    /// Where the AI moves to (a live redirect).
    redirect: tokio::sync::mpsc::UnboundedSender<StreamSpec>,
    stats: Arc<StreamStats>,
}

/// The socket task's end of the link.
pub struct SocketSide {
    to_ai: Receiver<ToAi>,
    from_ai: Sender<FromAi>,
    from_ai_cap: usize,
    wake_socket: Arc<Notify>,
    wake_leg: Arc<Notify>,
    stop: oneshot::Receiver<String>,
    redirect: tokio::sync::mpsc::UnboundedReceiver<StreamSpec>,
    stats: Arc<StreamStats>,
}

/// AI messages queued for the leg at most (it drains them every 20 ms).
const FROM_AI_CAP: usize = 256;

/// A linked pair. `to_ai_cap` frames of caller audio are held while the
/// AI is slow or reconnecting. The queues grow with use (crossbeam's list
/// channel) and the cap is enforced here, so an idle call holds no
/// preallocated slots.
pub fn link(to_ai_cap: usize, stats: Arc<StreamStats>) -> (LegSide, SocketSide) {
    let (to_tx, to_rx) = crossbeam_channel::unbounded();
    let (from_tx, from_rx) = crossbeam_channel::unbounded();
    let wake_socket = Arc::new(Notify::new());
    let wake_leg = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = oneshot::channel();
    let (redirect_tx, redirect_rx) = tokio::sync::mpsc::unbounded_channel();
    (
        LegSide {
            to_ai: to_tx,
            to_ai_oldest: to_rx.clone(),
            to_ai_cap: to_ai_cap.max(1),
            from_ai: from_rx,
            wake_socket: wake_socket.clone(),
            wake_leg: wake_leg.clone(),
            stop: Some(stop_tx),
            redirect: redirect_tx,
            stats: stats.clone(),
        },
        SocketSide {
            to_ai: to_rx,
            from_ai: from_tx,
            from_ai_cap: FROM_AI_CAP,
            wake_socket,
            wake_leg,
            stop: stop_rx,
            redirect: redirect_rx,
            stats,
        },
    )
}

impl LegSide {
    /// Moves the stream to `spec`'s AI (a live redirect).
    pub fn redirect(&self, spec: StreamSpec) {
        let _ = self.redirect.send(spec);
    }

    /// Queues a message for the AI; never blocks. When the queue is full
    /// the oldest message goes.
    pub fn send(&self, msg: ToAi) {
        if self.to_ai.len() >= self.to_ai_cap && self.to_ai_oldest.try_recv().is_ok() {
            self.stats.dropped_to_ai.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.to_ai.send(msg);
    }

    /// Wakes the socket task after a batch of [`send`](Self::send)s.
    pub fn flush(&self) {
        self.wake_socket.notify_one();
    }

    pub fn try_recv(&self) -> Option<FromAi> {
        self.from_ai.try_recv().ok()
    }

    /// The call is over: the socket task sends `stop` and closes.
    pub fn stop(&mut self, reason: &str) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(reason.to_string());
        }
    }
}

impl Drop for LegSide {
    fn drop(&mut self) {
        self.stop("leg closed");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Hard ceiling for one WebSocket message; the spec's own limit is
/// checked after reading, so an oversized frame is counted and skipped
/// instead of breaking the socket.
const WS_HARD_LIMIT: usize = 16 << 20;

/// Why a [`ConnectGuard`] refuses an address (the caller's own error).
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Decides whether an AI stream may connect to an address (the operator's
/// target policy): `Err` says why not.
#[derive(Clone)]
pub struct ConnectGuard(pub Arc<dyn Fn(std::net::IpAddr) -> Result<(), Refusal> + Send + Sync>);

/// Why the AI's socket could not be opened, or was lost.
#[derive(Debug, thiserror::Error)]
pub enum AiSocketError {
    #[error("bad stream URL: {0}")]
    Url(tokio_tungstenite::tungstenite::http::uri::InvalidUri),
    #[error("stream URL without a host")]
    NoHost,
    #[error("cannot resolve {host}: {error}")]
    Resolve { host: String, error: std::io::Error },
    #[error("{0} resolved to no address")]
    NoAddress(String),
    /// The guard refused every address the name resolved to.
    #[error("{0}")]
    Refused(Refusal),
    #[error("{addr}: {error}")]
    Connect {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("connect timeout")]
    Timeout,
    /// The handshake, a send or a receive failed.
    #[error("{0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    #[error("socket closed without a close frame")]
    ClosedWithoutFrame,
    #[error("no answer to keepalive pings")]
    Silent,
}

impl From<tokio_tungstenite::tungstenite::Error> for AiSocketError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        AiSocketError::WebSocket(Box::new(e))
    }
}

impl std::fmt::Debug for ConnectGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectGuard")
    }
}

/// Resolves the URL's host and opens TCP to the first address the guard
/// allows (the name is checked as it resolves now, not as it did when the
/// URL was stored).
async fn open_tcp(
    url: &str,
    guard: Option<&ConnectGuard>,
) -> Result<tokio::net::TcpStream, AiSocketError> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().map_err(AiSocketError::Url)?;
    let host = uri.host().ok_or(AiSocketError::NoHost)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| AiSocketError::Resolve {
            host: host.to_string(),
            error,
        })?;
    let mut refused = None;
    let mut last = None;
    for addr in addrs {
        if let Some(Err(why)) = guard.map(|g| (g.0)(addr.ip())) {
            refused = Some(AiSocketError::Refused(why));
            continue;
        }
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(error) => last = Some(AiSocketError::Connect { addr, error }),
        }
    }
    Err(last
        .or(refused)
        .unwrap_or_else(|| AiSocketError::NoAddress(host.to_string())))
}

/// Opens the AI's WebSocket; the time a successful open took goes into
/// `stats.connect_ms`.
async fn connect(
    spec: &StreamSpec,
    guard: Option<&ConnectGuard>,
    stats: &StreamStats,
) -> Result<Ws, AiSocketError> {
    let started = Instant::now();
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(WS_HARD_LIMIT);
    cfg.max_frame_size = Some(WS_HARD_LIMIT);
    // tungstenite's 128 KiB buffers per socket would be most of a call's
    // memory; frames here are small and every batch is flushed at once.
    cfg.read_buffer_size = 4096;
    cfg.write_buffer_size = 0;
    let attempt = async {
        let tcp = open_tcp(&spec.url, guard).await?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async_tls_with_config(spec.url.as_str(), tcp, Some(cfg), None)
            .await
            .map_err(AiSocketError::from)
    };
    match tokio::time::timeout(spec.connect_timeout, attempt).await {
        Ok(Ok((ws, _))) => {
            stats
                .connect_ms
                .observe_ms(started.elapsed().as_secs_f64() * 1000.0);
            Ok(ws)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AiSocketError::Timeout),
    }
}

enum SessionEnd {
    /// The leg stopped (call over).
    Stop(String),
    /// The AI closed the socket.
    Closed,
    /// The socket broke or went silent.
    Lost(AiSocketError),
    /// Call control moves the stream to another AI.
    Redirect(StreamSpec),
}

/// Runs the stream until the call ends or the AI is gone.
pub async fn run(
    mut spec: StreamSpec,
    mut side: SocketSide,
    guard: Option<ConnectGuard>,
    events: impl Fn(StreamEvent),
) {
    let mut codec = codec_for(&spec);
    let stats = side.stats.clone();
    let mut ws = tokio::select! {
        r = connect(&spec, guard.as_ref(), &stats) => match r {
            Ok(ws) => ws,
            Err(e) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %spec.url, call = %spec.call_sid, error = %e, "AI stream connect failed");
                events(StreamEvent::Failed(e.to_string()));
                return;
            }
        },
        _ = &mut side.stop => return,
    };
    stats.connects.fetch_add(1, Ordering::Relaxed);
    let mut first = true;
    // The socket goes on where it was (a redirect that failed), without
    // `connected`/`start` again.
    let mut resume = false;
    // Caller messages taken off the queue at a redirect, for the new AI.
    let mut carry: Vec<ToAi> = Vec::new();
    loop {
        let opened = if std::mem::take(&mut resume) {
            None
        } else {
            Some(send_all(&mut ws, codec.opening()).await)
        };
        let end = match opened {
            None => session(&spec, &mut ws, codec.as_mut(), &mut side, &events).await,
            Some(Err(e)) => SessionEnd::Lost(e.into()),
            Some(Ok(())) => {
                // Caller audio held over a redirect, in order, first.
                for msg in carry.drain(..) {
                    let _ = ws.feed(to_message(codec.encode(&msg))).await;
                }
                if side.from_ai.send(FromAi::Connected).is_ok() {
                    side.wake_leg.notify_one();
                }
                if std::mem::take(&mut first) {
                    events(StreamEvent::Connected);
                }
                session(&spec, &mut ws, codec.as_mut(), &mut side, &events).await
            }
        };
        match end {
            SessionEnd::Stop(reason) => {
                // What the leg queued before it stopped (a transfer's
                // result, last marks) goes out before `stop`.
                while let Ok(msg) = side.to_ai.try_recv() {
                    if ws.feed(to_message(codec.encode(&msg))).await.is_err() {
                        break;
                    }
                }
                let _ = ws.send(to_message(codec.closing(&reason))).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return;
            }
            SessionEnd::Redirect(next) => {
                // The new AI opens first; only then does the old one get
                // `stop`, so the caller's audio waits in the queue for the
                // connect alone and none is lost.
                let opened = tokio::select! {
                    r = connect(&next, guard.as_ref(), &stats) => r,
                    r = &mut side.stop => {
                        let closing = to_message(codec.closing(&r.unwrap_or_default()));
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(closing)).await;
                        return;
                    }
                };
                match opened {
                    Ok(new_ws) => {
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        // What answers the old AI (its played marks, a
                        // transfer's result) ends its stream; the caller's
                        // audio and digits go on to the new one.
                        let mut farewell = Vec::new();
                        while let Ok(msg) = side.to_ai.try_recv() {
                            match msg {
                                ToAi::Mark { .. } | ToAi::TransferResult(_) => {
                                    farewell.push(to_message(codec.encode(&msg)));
                                }
                                other => carry.push(other),
                            }
                        }
                        farewell.push(to_message(codec.closing("redirected")));
                        let mut old = std::mem::replace(&mut ws, new_ws);
                        // Off this task, bounded: an old AI that stopped
                        // reading cannot hold the new stream up.
                        tokio::task::spawn_local(async move {
                            let bye = async {
                                for m in farewell {
                                    old.feed(m).await?;
                                }
                                old.flush().await?;
                                old.close(None).await
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                        });
                        // The old AI's queued speech, tones and marks are
                        // not the new one's to play or answer.
                        if side.from_ai.send(FromAi::Reset).is_ok() {
                            side.wake_leg.notify_one();
                        }
                        tracing::info!(call = %spec.call_sid, url = %next.url, "AI stream redirected");
                        codec = codec_for(&next);
                        spec = next;
                    }
                    Err(e) => {
                        // The old AI keeps the call.
                        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(call = %spec.call_sid, url = %next.url, error = %e, "AI stream not redirected");
                        resume = true;
                    }
                }
            }
            SessionEnd::Closed => {
                tracing::info!(call = %spec.call_sid, "AI closed the stream");
                events(StreamEvent::Ended("ai_closed".into()));
                return;
            }
            SessionEnd::Lost(why) => {
                tracing::warn!(call = %spec.call_sid, error = %why, "AI stream lost; reconnecting");
                let sid = spec.stream_sid.clone();
                match reconnect(&mut spec, guard.as_ref(), &mut side).await {
                    Ok(new) if spec.stream_sid != sid => {
                        // Redirected while reconnecting: the new AI's
                        // stream, with its own codec.
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        if side.from_ai.send(FromAi::Reset).is_ok() {
                            side.wake_leg.notify_one();
                        }
                        codec = codec_for(&spec);
                        ws = new;
                    }
                    Ok(new) => {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        ws = new;
                    }
                    Err(Some(_reason)) => return,
                    Err(None) => {
                        stats.lost.fetch_add(1, Ordering::Relaxed);
                        events(StreamEvent::Ended("ai_lost".into()));
                        return;
                    }
                }
            }
        }
    }
}

/// Tries to reconnect until the window lapses (`Err(None)`) or the call
/// ends (`Err(Some(reason))`). A redirect that arrives meanwhile replaces
/// `spec`: the next attempts go to the new AI.
async fn reconnect(
    spec: &mut StreamSpec,
    guard: Option<&ConnectGuard>,
    side: &mut SocketSide,
) -> Result<Ws, Option<String>> {
    let deadline = Instant::now() + spec.reconnect_window;
    let mut backoff = Duration::from_millis(100);
    while Instant::now() < deadline {
        tokio::select! {
            r = connect(spec, guard, &side.stats) => if let Ok(ws) = r {
                return Ok(ws);
            },
            r = &mut side.stop => return Err(Some(r.unwrap_or_default())),
            Some(next) = side.redirect.recv() => {
                *spec = next;
                continue;
            }
        }
        let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = &mut side.stop => return Err(Some(r.unwrap_or_default())),
            Some(next) = side.redirect.recv() => *spec = next,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Err(None)
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Text(t) => Message::text(t),
        Frame::Binary(b) => Message::binary(b),
    }
}

async fn send_all(
    ws: &mut Ws,
    frames: Vec<Frame>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for f in frames {
        ws.feed(to_message(f)).await?;
    }
    ws.flush().await
}

async fn session(
    spec: &StreamSpec,
    ws: &mut Ws,
    codec: &mut dyn DialectCodec,
    side: &mut SocketSide,
    events: &impl Fn(StreamEvent),
) -> SessionEnd {
    let stats = side.stats.clone();
    let mut ping = tokio::time::interval(spec.keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut decoded = Vec::new();
    loop {
        tokio::select! {
            biased;
            r = &mut side.stop => return SessionEnd::Stop(r.unwrap_or_default()),
            Some(next) = side.redirect.recv() => return SessionEnd::Redirect(next),
            _ = side.wake_socket.notified() => {
                let mut n = 0u64;
                while let Ok(msg) = side.to_ai.try_recv() {
                    if let Err(e) = ws.feed(to_message(codec.encode(&msg))).await {
                        return SessionEnd::Lost(e.into());
                    }
                    n += 1;
                }
                if n > 0 {
                    stats.frames_out.fetch_add(n, Ordering::Relaxed);
                    if let Err(e) = ws.flush().await {
                        return SessionEnd::Lost(e.into());
                    }
                }
            }
            msg = ws.next() => {
                last_heard = Instant::now();
                let frame = match msg {
                    Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                    Some(Ok(Message::Close(_))) => return SessionEnd::Closed,
                    Some(Ok(_)) => continue, // ping (answered by tungstenite), pong
                    Some(Err(e)) => return SessionEnd::Lost(e.into()),
                    None => return SessionEnd::Lost(AiSocketError::ClosedWithoutFrame),
                };
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                let len = match &frame {
                    Frame::Text(t) => t.len(),
                    Frame::Binary(b) => b.len(),
                };
                let res = if len > spec.max_frame_bytes {
                    Err(ProtocolError::Oversized(len))
                } else {
                    codec.decode(frame, &mut decoded)
                };
                if let Err(e) = res {
                    stats.count(&e);
                    tracing::debug!(call = %spec.call_sid, error = %e, "AI frame refused");
                }
                for m in decoded.drain(..) {
                    // Call control, not media: to the signalling core.
                    if let FromAi::Transfer { to } = m {
                        events(StreamEvent::Transfer(to));
                        continue;
                    }
                    if m == FromAi::Hangup {
                        events(StreamEvent::Ended(AI_HANGUP.into()));
                        continue;
                    }
                    if side.from_ai.len() >= side.from_ai_cap {
                        stats.dropped_from_ai.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = side.from_ai.send(m);
                    }
                }
                side.wake_leg.notify_one();
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > spec.keepalive * 3 {
                    return SessionEnd::Lost(AiSocketError::Silent);
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return SessionEnd::Lost(e.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n: i16) -> ToAi {
        ToAi::Audio {
            samples: vec![n; 4],
            timestamp_ms: 0,
            track: crate::aistream::Track::Inbound,
        }
    }

    #[test]
    fn a_slow_ai_costs_the_oldest_caller_audio_never_a_wait() {
        let stats = Arc::new(StreamStats::default());
        let (leg, socket) = link(3, stats.clone());
        for n in 0..5 {
            leg.send(audio(n));
        }
        assert_eq!(stats.dropped_to_ai.load(Ordering::Relaxed), 2);
        let kept: Vec<ToAi> = std::iter::from_fn(|| socket.to_ai.try_recv().ok()).collect();
        assert_eq!(kept, vec![audio(2), audio(3), audio(4)], "the newest three");
    }

    #[test]
    fn stop_reaches_the_socket_task_once_even_when_dropped() {
        let stats = Arc::new(StreamStats::default());
        let (mut leg, mut socket) = link(3, stats);
        leg.stop("hangup");
        leg.stop("again");
        drop(leg);
        assert_eq!(socket.stop.try_recv().as_deref(), Ok("hangup"));
    }
}
