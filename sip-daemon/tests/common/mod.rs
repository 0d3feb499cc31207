//! Runs the real `sip-daemon` binary for integration tests: a private
//! config (free loopback ports, SQLite in a temp dir), readiness by a real
//! OPTIONS ping, SIGTERM on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Option<Child>,
    pub sip_port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

impl Daemon {
    /// Starts the daemon with the loopback example's routing and `extra`
    /// TOML appended (more numbers, users...).
    pub fn start(extra: &str) -> Daemon {
        Self::start_with(extra, None)
    }

    pub fn start_with(extra: &str, database_url: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let sip_port = free_port();
        let metrics_port = free_port();
        let media_base = 20000 + (sip_port % 100) * 200;
        let cfg = format!(
            r#"
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
realm = "test"
auth_secret = "test-secret"
drain_timeout_secs = 5
t1_ms = 500

[media]
bind_ip = "127.0.0.1"
port_min = {media_base}
port_max = {media_max}
timeout_secs = 30
workers = 1

[store]
url = "sqlite://{db}"

[api]
listen = "127.0.0.1:{metrics_port}"

[log]
level = "info"

[[accounts]]
id = "acct"

[[trunks]]
name = "local"
source_cidrs = ["127.0.0.0/8"]

[[numbers]]
pattern = "+1555000*"
account = "acct"
route = "echo"

[[numbers]]
pattern = "*"
account = "acct"
route = "stream"
target = "ws://127.0.0.1:9/stream"
{extra}
"#,
            media_max = media_base + 199,
            db = dir.path().join("gw.db").display(),
        );
        let cfg_path = dir.path().join("gw.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("daemon.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sip-daemon"));
        cmd.arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .env_remove("DATABASE_URL");
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let child = cmd.spawn().expect("spawn sip-daemon");
        let d = Daemon {
            child: Some(child),
            sip_port,
            metrics_port,
            dir,
            log,
        };
        d.wait_ready();
        d
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("gw.db")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            if options_ping(&sock, self.sip_addr(), n).is_some() {
                return;
            }
        }
        panic!(
            "daemon did not answer OPTIONS within 60 s; log:\n{}",
            self.logs()
        );
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 30 s of SIGTERM; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Plain-text Prometheus exposition.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Value of one sample line (`name{labels}`) or 0.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends one OPTIONS and returns the status of the answer.
pub fn options_ping(sock: &UdpSocket, to: SocketAddr, n: u32) -> Option<u16> {
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKping{n}\r\nMax-Forwards: 70\r\nFrom: <sip:ping@{local}>;tag=p{n}\r\nTo: <sip:{to}>\r\nCall-ID: ping-{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), to).ok()?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]);
            if text.contains(&format!("ping-{n}@test")) {
                return text.split_whitespace().nth(1)?.parse().ok();
            }
        }
    }
    None
}
