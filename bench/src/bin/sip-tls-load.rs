//! Calls over SIP over TLS or over TCP, on a few long-lived connections
//! (connection reuse: every call's requests and responses share them), as
//! a carrier's secure trunk sends them. Each connection places its calls
//! one after another: INVITE (with an SDP offer) → 200 → ACK → BYE → 200,
//! paced so that all connections together offer `--rate` calls/s. The
//! same client does both transports, so the daemon's CPU per call can be
//! compared between them (bench/scripts/sip-tls.sh measures it). Every
//! loop is bounded by `--calls` and by a deadline.
//!
//!   sip-tls-load --target 127.0.0.1:15061 --transport tls|tcp [--ca CA.pem]
//!                [--calls 4000] [--rate 400] [--conns 4] [--number +15550001234]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    target: SocketAddr,
    tls: bool,
    ca: Option<String>,
    calls: usize,
    rate: f64,
    conns: usize,
    number: String,
}

fn args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:15061".parse().expect("addr"),
        tls: true,
        ca: None,
        calls: 4000,
        rate: 400.0,
        conns: 4,
        number: "+15550001234".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let val = w.get(1).unwrap_or_else(|| panic!("{} needs a value", w[0]));
        match w[0].as_str() {
            "--target" => a.target = val.parse().expect("--target IP:PORT"),
            "--transport" => a.tls = val == "tls",
            "--ca" => a.ca = Some(val.clone()),
            "--calls" => a.calls = val.parse().expect("--calls N"),
            "--rate" => a.rate = val.parse().expect("--rate N"),
            "--conns" => a.conns = val.parse().expect("--conns N"),
            "--number" => a.number = val.clone(),
            o => panic!("unknown option {o}"),
        }
    }
    assert!((1..=1_000_000).contains(&a.calls) && a.rate > 0.0 && (1..=64).contains(&a.conns));
    a
}

/// A connection: plain TCP or TLS over it, with a read buffer.
struct Conn {
    io: Box<dyn ReadWrite>,
    buf: Vec<u8>,
    local: SocketAddr,
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn tls_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in sip_daemon::tls::read_certs(std::path::Path::new(ca)).expect("CA file") {
        roots.add(c).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

impl Conn {
    fn open(a: &Args, cfg: Option<Arc<rustls::ClientConfig>>) -> Conn {
        let tcp = TcpStream::connect(a.target).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let local = tcp.local_addr().expect("local");
        let io: Box<dyn ReadWrite> = match cfg {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::IpAddress(a.target.ip().into());
                let c = rustls::ClientConnection::new(cfg, name).expect("TLS client");
                Box::new(rustls::StreamOwned::new(c, tcp))
            }
            None => Box::new(tcp),
        };
        Conn {
            io,
            buf: Vec::with_capacity(8192),
            local,
        }
    }

    fn send(&mut self, msg: &str) {
        self.io.write_all(msg.as_bytes()).expect("send");
        self.io.flush().expect("flush");
    }

    /// The next SIP message on the connection (headers and body).
    fn recv(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        (k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("l"))
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg = String::from_utf8_lossy(&self.buf[..end + 4 + len]).to_string();
                    self.buf.drain(..end + 4 + len);
                    return msg;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.io.read(&mut chunk).expect("read");
            assert!(n > 0, "the daemon closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the final response to `cseq` (1xx skipped); its status
    /// and the message.
    fn final_for(&mut self, cseq: &str) -> (u16, String) {
        loop {
            let m = self.recv();
            if !m.starts_with("SIP/2.0 ") || !m.contains(cseq) {
                continue;
            }
            let status: u16 = m[8..11].parse().unwrap_or(0);
            if status >= 200 {
                return (status, m);
            }
        }
    }
}

fn header<'a>(m: &'a str, name: &str) -> &'a str {
    m.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or("")
}

/// One call on `c`: INVITE, 200, ACK, BYE, 200. Whether it completed.
fn call(c: &mut Conn, a: &Args, id: &str) -> bool {
    let tr = if a.tls { "TLS" } else { "TCP" };
    let (local, target, number) = (c.local, a.target, &a.number);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        ip = local.ip()
    );
    let common = |method: &str, cseq: u32, branch: &str, to_tag: &str| {
        format!(
            "{method} sip:{number}@{target};transport={t} SIP/2.0\r\n\
Via: SIP/2.0/{tr} {local};branch=z9hG4bK{branch};alias\r\n\
Max-Forwards: 70\r\n\
From: <sip:+14155550100@{ip}>;tag=f{id}\r\n\
To: <sip:{number}@{target}>{to_tag}\r\n\
Call-ID: {id}@load\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:+14155550100@{local};transport={t}>\r\n",
            t = tr.to_ascii_lowercase(),
            ip = local.ip(),
        )
    };
    c.send(&format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        common("INVITE", 1, &format!("i{id}"), ""),
        sdp.len()
    ));
    let (status, ok) = c.final_for("1 INVITE");
    if status != 200 {
        return false;
    }
    let to = header(&ok, "To");
    let to_tag = to
        .find(";tag=")
        .map_or(String::new(), |i| to[i..].to_string());
    c.send(&format!(
        "{}Content-Length: 0\r\n\r\n",
        common("ACK", 1, &format!("a{id}"), &to_tag)
    ));
    c.send(&format!(
        "{}Content-Length: 0\r\n\r\n",
        common("BYE", 2, &format!("b{id}"), &to_tag)
    ));
    c.final_for("2 BYE").0 == 200
}

fn main() {
    let a = Arc::new(args());
    let cfg = a.tls.then(|| {
        tls_config(
            a.ca.as_deref()
                .expect("--ca CA.pem: the daemon's certificate's issuer"),
        )
    });
    let per = a.calls.div_ceil(a.conns);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.calls as f64 / a.rate * 3.0 + 60.0);
    let handles: Vec<_> = (0..a.conns)
        .map(|k| {
            let (a, cfg) = (a.clone(), cfg.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(&a, cfg);
                let n = per.min(a.calls.saturating_sub(k * per));
                let every = Duration::from_secs_f64(a.conns as f64 / a.rate);
                let mut ok = 0usize;
                for i in 0..n {
                    let due = start + every * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if now > deadline {
                        break;
                    }
                    if call(&mut c, &a, &format!("{k}-{i}-{}", std::process::id())) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().expect("conn")).sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "transport={} calls={} completed={ok} conns={} seconds={secs:.1} rate={:.0}/s",
        if a.tls { "tls" } else { "tcp" },
        a.calls,
        a.conns,
        ok as f64 / secs
    );
    if ok != a.calls {
        std::process::exit(1);
    }
}
