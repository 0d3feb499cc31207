//! The socket edge of SIP (RFC 3261 §18): UDP, TCP and TLS listeners on
//! IPv4 and IPv6. Receivers admit each message by its source's rate
//! ([`crate::admission`]) before parsing it, then hand it to the core
//! through one of two bounded channels: trunk traffic has its own, served
//! first, so a flood from elsewhere cannot starve the carriers;
//! [`Transports::send`] never blocks the core. TLS ([`crate::tls`]) is one
//! more stream variant beside TCP: the framing, limits, connection table
//! and reuse rules below are shared, and a connection of one kind is never
//! used for the other (a TLS peer never gets cleartext).

use crate::admission::{Admission, SourceAdmission};
use crate::config::Listener;
use crate::metrics::Metrics;
use crate::sip::SipMessage;
use crate::sip::framer::{Frame, StreamFramer};
use crate::sip::parse::{self, Framing, ParseError};
use crate::sip::transport::{ConnId, Peer, Transmit, TransportKind};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// A message (or why it could not be parsed) and where it came from.
#[derive(Debug)]
pub struct Inbound {
    pub peer: Peer,
    pub msg: Result<SipMessage, ParseError>,
}

#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub max_message_size: usize,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    /// Inbound connections from one address held at once.
    pub max_tcp_connections_per_source: usize,
    /// A message begun must be whole within this, or the connection closes.
    pub tcp_message_timeout: Duration,
    /// The TLS listeners' certificate (required with a TLS listener).
    pub tls_cert: Option<Arc<crate::tls::ServerCert>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind SIP {transport} listener on {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SIP TLS listener on {addr}: {why}")]
    Tls { addr: SocketAddr, why: String },
}

/// Frames queued per TCP connection before it counts as stuck.
const CONN_QUEUE: usize = 1024;

struct Conn {
    tx: mpsc::Sender<Bytes>,
    remote: SocketAddr,
    kind: TransportKind,
    /// Addresses the peer asked us to reach it at over this connection
    /// (RFC 5923 `alias`), at most [`MAX_ALIASES`].
    aliases: Vec<SocketAddr>,
}

/// Aliases one connection may hold: a peer has a listener or two.
const MAX_ALIASES: usize = 2;

#[derive(Default)]
struct ConnTable {
    by_id: HashMap<ConnId, Conn>,
    /// §18.1.1/§18.2.2: requests and responses to a remote reuse an open
    /// connection of the same transport to it.
    by_remote: HashMap<(TransportKind, SocketAddr), ConnId>,
    /// Open connections per peer address (the per-host cap).
    per_ip: HashMap<std::net::IpAddr, usize>,
    /// TLS handshakes under way per peer address: they hold a slot of
    /// both caps until they end.
    handshaking: HashMap<std::net::IpAddr, usize>,
}

struct Inner {
    cfg: TransportConfig,
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Bound TCP and TLS listener addresses, used as the local side of
    /// outbound connections.
    tcp_local: Vec<SocketAddr>,
    tls_server: Option<tokio_rustls::TlsAcceptor>,
    /// How to reach TLS peers (the trunks'; others: the default profile),
    /// with their client configurations built once.
    tls_clients: Mutex<TlsClients>,
    conns: Mutex<ConnTable>,
    next_conn: AtomicU64,
    inbound: Queues,
    admission: Mutex<SourceAdmission>,
    metrics: Metrics,
}

/// The core's two inbound queues.
#[derive(Clone)]
pub struct Queues {
    /// From trunks' networks.
    pub trunk: mpsc::Sender<Inbound>,
    /// From everyone else.
    pub other: mpsc::Sender<Inbound>,
    /// Peers a connection (or a TLS handshake) to failed, so their
    /// transactions end at once (RFC 3261 §17.1.4).
    pub failed: mpsc::Sender<Peer>,
}

/// Handle to the SIP sockets. Cheap to clone.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

impl Transports {
    /// Binds every listener and starts its receive task. Messages go to
    /// the queue `admission` chooses; when it is full, datagrams are
    /// dropped (and counted) rather than queued without bound.
    pub async fn bind(
        listeners: &[Listener],
        cfg: TransportConfig,
        inbound: Queues,
        admission: SourceAdmission,
        metrics: Metrics,
    ) -> Result<(Transports, Vec<Listener>), TransportError> {
        let mut udp = HashMap::new();
        let mut tcp = Vec::new();
        let mut bound = Vec::new();
        let tls_server = match &cfg.tls_cert {
            Some(cert) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(cert.clone()).map_err(|e| TransportError::Tls {
                    addr: listeners
                        .iter()
                        .find(|l| l.transport == TransportKind::Tls)
                        .map(|l| l.addr)
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    why: e.to_string(),
                })?,
            )),
            None => None,
        };
        for l in listeners {
            match l.transport {
                TransportKind::Udp => {
                    let sock = bind_udp(l.addr).map_err(|source| TransportError::Bind {
                        transport: "udp",
                        addr: l.addr,
                        source,
                    })?;
                    let local = sock.local_addr().unwrap_or(l.addr);
                    udp.insert(local, Arc::new(sock));
                    bound.push(Listener {
                        transport: TransportKind::Udp,
                        addr: local,
                    });
                }
                TransportKind::Tcp | TransportKind::Tls => {
                    if l.transport == TransportKind::Tls && tls_server.is_none() {
                        return Err(TransportError::Tls {
                            addr: l.addr,
                            why: "no certificate (sip.tls.cert_file, key_file)".into(),
                        });
                    }
                    let sock = bind_tcp(l.addr).map_err(|source| TransportError::Bind {
                        transport: l.transport.label(),
                        addr: l.addr,
                        source,
                    })?;
                    let local = sock.local_addr().unwrap_or(l.addr);
                    tcp.push((l.transport, local, sock));
                    bound.push(Listener {
                        transport: l.transport,
                        addr: local,
                    });
                }
            }
        }
        let t = Transports {
            inner: Arc::new(Inner {
                cfg,
                udp,
                tcp_local: tcp.iter().map(|(_, a, _)| *a).collect(),
                tls_server,
                tls_clients: Mutex::new(TlsClients::default()),
                conns: Mutex::new(ConnTable::default()),
                next_conn: AtomicU64::new(1),
                inbound,
                admission: Mutex::new(admission),
                metrics,
            }),
        };
        for (local, sock) in t.inner.udp.iter() {
            tokio::spawn(udp_receiver(t.clone(), *local, sock.clone()));
        }
        for (kind, local, listener) in tcp {
            tokio::spawn(tcp_acceptor(t.clone(), kind, local, listener));
        }
        Ok((t, bound))
    }

    /// Sends without blocking the caller.
    pub fn send(&self, t: Transmit) {
        match t.peer.transport {
            TransportKind::Udp => self.send_udp(t),
            TransportKind::Tcp | TransportKind::Tls => self.send_stream(t),
        }
    }

    fn send_udp(&self, t: Transmit) {
        let sock = self
            .inner
            .udp
            .get(&t.peer.local)
            .or_else(|| {
                // A listener on 0.0.0.0 or a peer of the other family.
                let v6 = t.peer.remote.is_ipv6();
                self.inner
                    .udp
                    .iter()
                    .find(|(a, _)| a.is_ipv6() == v6)
                    .map(|(_, s)| s)
            })
            .cloned();
        let Some(sock) = sock else {
            self.inner.metrics.reject("no_transport");
            return;
        };
        match sock.try_send_to(&t.bytes, t.peer.remote) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::spawn(async move {
                    let _ = sock.send_to(&t.bytes, t.peer.remote).await;
                });
            }
            Err(e) => tracing::debug!(remote = %t.peer.remote, error = %e, "UDP send failed"),
        }
    }

    fn send_stream(&self, t: Transmit) {
        let kind = t.peer.transport;
        let existing = {
            let table = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
            t.peer
                .conn
                .and_then(|id| table.by_id.get(&id))
                .filter(|c| c.kind == kind)
                .or_else(|| {
                    table
                        .by_remote
                        .get(&(kind, t.peer.remote))
                        .and_then(|id| table.by_id.get(id))
                })
                .map(|c| c.tx.clone())
        };
        match existing {
            Some(tx) => {
                if tx.try_send(t.bytes).is_err() {
                    self.inner.metrics.reject("tcp_backlog");
                }
            }
            None => {
                // §18.2.2: the connection is gone; open a new one to the
                // address the response (or request) is for.
                let me = self.clone();
                tokio::spawn(async move {
                    let remote = t.peer.remote;
                    // Only a request's failure is news to the core (a
                    // response's peer is gone: nothing to end).
                    let request = !t.bytes.starts_with(b"SIP/2.0 ");
                    let fail = |me: &Transports| {
                        if request {
                            let _ = me.inner.inbound.failed.try_send(t.peer);
                        }
                    };
                    let connect = tokio::time::timeout(
                        me.inner.cfg.tcp_message_timeout,
                        TcpStream::connect(remote),
                    );
                    let stream = match connect.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TCP connect failed");
                            fail(&me);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TCP connect timed out");
                            fail(&me);
                            return;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream
                        .local_addr()
                        .ok()
                        .or_else(|| me.inner.tcp_local.first().copied())
                        .unwrap_or(t.peer.local);
                    let tx = if kind == TransportKind::Tls {
                        // Never cleartext instead: no handshake, no send.
                        match me.tls_connect(stream, remote).await {
                            Some(s) => me.adopt_stream(s, kind, local, remote),
                            None => {
                                fail(&me);
                                return;
                            }
                        }
                    } else {
                        me.adopt_stream(stream, kind, local, remote)
                    };
                    let _ = tx.try_send(t.bytes);
                });
            }
        }
    }

    /// Open stream connections with a peer at `ip`, and TLS handshakes
    /// with it under way.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.inner
            .conns
            .lock()
            .map(|t| {
                t.per_ip.get(&ip).copied().unwrap_or(0)
                    + t.handshaking.get(&ip).copied().unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Open stream connections and TLS handshakes under way.
    pub fn connections(&self) -> usize {
        self.inner
            .conns
            .lock()
            .map(|t| t.by_id.len() + t.handshaking.values().sum::<usize>())
            .unwrap_or(0)
    }

    /// Counts a TLS handshake with `ip` as begun (`true`) or ended.
    fn handshaking(&self, ip: std::net::IpAddr, begun: bool) {
        let mut table = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        if begun {
            *table.handshaking.entry(ip).or_default() += 1;
        } else if let Some(n) = table.handshaking.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                table.handshaking.remove(&ip);
            }
        }
    }

    /// The TLS client handshake with `remote` as its profile says, bounded
    /// by the message timeout; `None` (logged, counted) when it fails.
    async fn tls_connect(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
        let _ = tcp.set_nodelay(true);
        let (profile, cached) = self
            .inner
            .tls_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cached(remote);
        // Files are read (and the system roots loaded) outside the lock,
        // on a blocking thread: a slow mount stalls no routing change.
        let config = match cached {
            Some(c) => c,
            None => {
                let p = profile.clone();
                let built = tokio::task::spawn_blocking(move || crate::tls::client_config(&p))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match built {
                    Ok(c) => {
                        self.inner
                            .tls_clients
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .configs
                            .insert(profile.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "TLS client configuration refused; nothing sent");
                        self.inner.metrics.reject("tls_handshake");
                        return None;
                    }
                }
            }
        };
        let Some(name) = crate::tls::server_name(&profile, remote) else {
            tracing::warn!(%remote, name = ?profile.server_name, "TLS: not a server name");
            self.inner.metrics.reject("tls_handshake");
            return None;
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(
            self.inner.cfg.tcp_message_timeout,
            connector.connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(%remote, error = %e, "TLS handshake failed; nothing sent");
                self.inner.metrics.reject("tls_handshake");
                None
            }
            Err(_) => {
                tracing::warn!(%remote, "TLS handshake timed out; nothing sent");
                self.inner.metrics.reject("tls_handshake");
                None
            }
        }
    }

    /// Registers a connection and starts its reader and writer.
    fn adopt_stream<S>(
        &self,
        stream: S,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> mpsc::Sender<Bytes>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        {
            let mut table = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
            table.by_id.insert(
                id,
                Conn {
                    tx: tx.clone(),
                    remote,
                    kind,
                    aliases: Vec::new(),
                },
            );
            table.by_remote.insert((kind, remote), id);
            *table.per_ip.entry(remote.ip()).or_default() += 1;
            self.inner
                .metrics
                .tcp_connections
                .set(table.by_id.len() as i64);
        }
        let (rd, wr) = tokio::io::split(stream);
        tokio::spawn(stream_writer(wr, rx));
        let peer = Peer {
            transport: kind,
            local,
            remote,
            conn: Some(id),
        };
        tokio::spawn(stream_reader(self.clone(), rd, tx.clone(), peer));
        tx
    }

    fn forget(&self, id: ConnId) {
        let mut table = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = table.by_id.remove(&id) {
            for a in std::iter::once(c.remote).chain(c.aliases.iter().copied()) {
                if table.by_remote.get(&(c.kind, a)) == Some(&id) {
                    table.by_remote.remove(&(c.kind, a));
                }
            }
            if let Some(n) = table.per_ip.get_mut(&c.remote.ip()) {
                *n -= 1;
                if *n == 0 {
                    table.per_ip.remove(&c.remote.ip());
                }
            }
        }
        self.inner
            .metrics
            .tcp_connections
            .set(table.by_id.len() as i64);
    }

    /// RFC 5923 §5: a request whose top Via carries `alias` lets its
    /// connection carry our requests to the Via's sent-by as well, so a
    /// peer's listener is reached without a second connection. Only the
    /// connection's own host is taken (another host's address is never
    /// captured), an address another live connection holds stays with it,
    /// and a connection keeps at most [`MAX_ALIASES`].
    fn note_alias(&self, id: ConnId, peer: Peer, via: &crate::sip::headers_typed::Via) {
        // Over TLS the alias needs the peer authenticated for its
        // sent-by (§5), which a client without a certificate is not: a
        // host sharing a carrier's address must not capture what we send
        // there under the carrier's verification. Carriers are reached at
        // their configured addresses anyway.
        if peer.transport != TransportKind::Tcp
            || !via.params.has("alias")
            || via.host.ip() != Some(peer.remote.ip())
        {
            return;
        }
        let port = via.port.unwrap_or(match peer.transport {
            TransportKind::Tls => 5061,
            _ => 5060,
        });
        let alias = SocketAddr::new(peer.remote.ip(), port);
        if alias == peer.remote {
            return;
        }
        let mut table = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        let key = (peer.transport, alias);
        if table.by_remote.get(&key).is_some_and(|other| *other != id) {
            return;
        }
        let Some(c) = table.by_id.get_mut(&id) else {
            return;
        };
        if c.aliases.contains(&alias) || c.aliases.len() >= MAX_ALIASES {
            return;
        }
        c.aliases.push(alias);
        table.by_remote.insert(key, id);
    }

    /// Replaces the trunks admission and the TLS client side know (after a
    /// routing change).
    pub fn set_trunks(&self, routing: &crate::routing::RoutingTable) {
        self.inner
            .tls_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_trunks(routing);
        self.admission().set_routing(
            routing,
            std::time::Instant::now(),
            crate::daemon::unix_ms_now(),
        );
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, SourceAdmission> {
        self.inner
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The queue for a message from `remote`, or `None` (counted) when its
    /// source is over its rate.
    fn admit(&self, remote: SocketAddr) -> Option<&mpsc::Sender<Inbound>> {
        let verdict = self
            .admission()
            .admit(std::time::Instant::now(), remote.ip());
        match verdict {
            Admission::Trunk => Some(&self.inner.inbound.trunk),
            Admission::Source => Some(&self.inner.inbound.other),
            Admission::OverRate => {
                self.inner.metrics.reject("source_rate");
                None
            }
            Admission::Denied => {
                self.inner.metrics.reject("denied");
                None
            }
        }
    }

    /// Admits, parses and hands a message to the core; drops it (counted)
    /// when its source is over its rate or the core is overloaded, so
    /// memory stays bounded and a flood costs no parse.
    fn deliver(&self, peer: Peer, bytes: &[u8], framing: Framing) {
        let Some(queue) = self.admit(peer.remote) else {
            return;
        };
        let msg = parse::parse(bytes, framing);
        if let (Some(id), Ok(crate::sip::SipMessage::Request(r))) = (peer.conn, &msg)
            && !std::ptr::eq(queue, &self.inner.inbound.trunk)
        {
            self.note_alias(id, peer, r.core.top_via());
        }
        if queue.try_send(Inbound { peer, msg }).is_err() {
            self.inner.metrics.reject("overload");
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts of calls arrive faster than one task drains them.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

async fn udp_receiver(t: Transports, local: SocketAddr, sock: Arc<UdpSocket>) {
    // §18.1.1: messages up to the largest datagram are accepted over UDP.
    let mut buf = vec![0u8; t.inner.cfg.max_message_size.max(1500) + 1];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on Linux; keep serving.
                tracing::trace!(error = %e, "UDP receive error");
                continue;
            }
        };
        if n > t.inner.cfg.max_message_size {
            t.inner.metrics.reject("too_large");
            continue;
        }
        let data = &buf[..n];
        // Keep-alive CRLFs (RFC 5626 §4.4.1).
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        let peer = Peer {
            transport: TransportKind::Udp,
            local,
            remote,
            conn: None,
        };
        t.deliver(peer, data, Framing::Datagram);
    }
}

async fn tcp_acceptor(
    t: Transports,
    kind: TransportKind,
    local: SocketAddr,
    listener: TcpListener,
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if t.connections() >= t.inner.cfg.max_tcp_connections {
                    t.inner.metrics.reject("tcp_limit");
                    drop(stream);
                    continue;
                }
                // One host may not hold every slot.
                if t.connections_from(remote.ip()) >= t.inner.cfg.max_tcp_connections_per_source {
                    t.inner.metrics.reject("tcp_source_limit");
                    drop(stream);
                    continue;
                }
                // A connection costs its source a message's token.
                if t.admit(remote).is_none() {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                if kind == TransportKind::Tls {
                    // The handshake in its own task: a slow client holds
                    // no one else up, and gets the message timeout.
                    let Some(acceptor) = t.inner.tls_server.clone() else {
                        continue;
                    };
                    // The handshake holds its slot of the caps until it ends.
                    t.handshaking(remote.ip(), true);
                    let t = t.clone();
                    tokio::spawn(async move {
                        let hs = tokio::time::timeout(
                            t.inner.cfg.tcp_message_timeout,
                            acceptor.accept(stream),
                        )
                        .await;
                        t.handshaking(remote.ip(), false);
                        match hs {
                            Ok(Ok(s)) => {
                                t.adopt_stream(s, kind, local, remote);
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                t.inner.metrics.reject("tls_handshake");
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                t.inner.metrics.reject("tls_handshake");
                            }
                        }
                    });
                } else {
                    t.adopt_stream(stream, kind, local, remote);
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn stream_writer<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// How long a connection closed for a framing error stays open for the
/// answer to leave; what the peer sends meanwhile is discarded.
const LINGER: Duration = Duration::from_secs(1);

async fn linger<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut sink = [0u8; 4096];
    let until = tokio::time::Instant::now() + LINGER;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, rd.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn stream_reader<R: AsyncRead + Unpin>(
    t: Transports,
    mut rd: R,
    tx: mpsc::Sender<Bytes>,
    peer: Peer,
) {
    let mut framer = StreamFramer::new(t.inner.cfg.max_message_size);
    let mut buf = vec![0u8; 16 * 1024];
    let remote = peer.remote;
    let id = peer.conn.unwrap_or_default();
    // When the message being framed began: it must be whole by the
    // message timeout (a sender trickling bytes holds no slot for long).
    let mut begun: Option<tokio::time::Instant> = None;
    'conn: loop {
        let wait = match begun {
            Some(at) => (at + t.inner.cfg.tcp_message_timeout)
                .saturating_duration_since(tokio::time::Instant::now())
                .min(t.inner.cfg.tcp_idle_timeout),
            None => t.inner.cfg.tcp_idle_timeout,
        };
        let n = match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) if begun.is_some() => {
                t.inner.metrics.reject("tcp_message_timeout");
                tracing::debug!(%remote, "closing SIP TCP connection: message not whole in time");
                break;
            }
            Err(_) => {
                tracing::debug!(%remote, "closing idle SIP TCP connection");
                break;
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {
                    begun = None;
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(Some(Frame::Message(m))) => {
                    begun = None;
                    t.deliver(peer, &m, Framing::Stream)
                }
                Err(e) => {
                    // The stream cannot be resynchronised after a framing
                    // error (§18.3): answer a request 400 when its headers
                    // are all here, count it and close once the answer had
                    // its time to leave.
                    t.inner.metrics.reject("framing");
                    tracing::debug!(%remote, error = %e, "closing SIP TCP connection");
                    if let Some(head) = framer.head() {
                        if let Some(queue) = t.admit(remote) {
                            let msg = Err(parse::unframeable(head, &e.to_string()));
                            if queue.try_send(Inbound { peer, msg }).is_err() {
                                t.inner.metrics.reject("overload");
                            }
                        }
                        linger(&mut rd).await;
                    }
                    break 'conn;
                }
            }
        }
        if framer.buffered() > 0 {
            begun.get_or_insert_with(tokio::time::Instant::now);
        }
    }
    t.forget(id);
}

/// The TLS client side: a profile per TLS trunk address (its server name,
/// CA file, client certificate), the default (system roots, the address
/// as the name) for everyone else, and each profile's configuration,
/// built at its first connection after a routing change.
#[derive(Default)]
struct TlsClients {
    by_remote: HashMap<SocketAddr, crate::tls::ClientProfile>,
    configs: HashMap<crate::tls::ClientProfile, Arc<rustls::ClientConfig>>,
}

impl TlsClients {
    fn set_trunks(&mut self, routing: &crate::routing::RoutingTable) {
        self.by_remote = routing
            .trunks()
            .filter(|e| e.transport() == Some(TransportKind::Tls))
            .filter_map(|e| Some((e.outbound_addr()?, e.tls_profile())))
            .collect();
        // Built again at the next connection: a CA or client certificate
        // rotated in place is read again within a routing reload.
        self.configs.clear();
    }

    /// The profile for `remote` and its configuration when built already.
    fn cached(
        &self,
        remote: SocketAddr,
    ) -> (crate::tls::ClientProfile, Option<Arc<rustls::ClientConfig>>) {
        let profile = self.by_remote.get(&remote).cloned().unwrap_or_default();
        let config = self.configs.get(&profile).cloned();
        (profile, config)
    }
}
