//! Runs the real `sip-daemon` binary for integration tests: a private
//! config (free loopback ports, SQLite in a temp dir), readiness by a real
//! OPTIONS ping, SIGTERM on drop.
// Shared by every test binary, each of which uses a different part:
// `pub` here is the module's interface, not the crate's.
#![allow(unreachable_pub)]
#![allow(dead_code)]

pub mod ai;
pub mod baresip;
pub mod hooks;
pub mod pki;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Knobs for [`Daemon::start_opts`].
#[derive(Default)]
pub struct Opts<'a> {
    /// TOML appended after the routing tables.
    pub extra: &'a str,
    /// Keys added to the `[sip]` section (use `{port}` for the SIP port).
    pub sip_extra: &'a str,
    pub database_url: Option<&'a str>,
    /// Replaces the listeners (use `{port}` for the SIP port).
    pub listen: Option<&'a str>,
    /// Keys added to the `[media]` section.
    pub media_extra: &'a str,
    /// Run inside this network namespace (`ip netns exec`); readiness and
    /// metrics are then checked from inside it too.
    pub netns: Option<&'a str>,
    /// Address of SIP (with `listen`) and media instead of 127.0.0.1.
    pub ip: Option<&'a str>,
    /// Keys added to the `[api]` section.
    pub api_extra: &'a str,
    /// `media.xdp_pin_dir` (a bpffs directory the test mounted); empty by
    /// default, so a test daemon never touches a host gateway's pins.
    pub xdp_pin_dir: &'a str,
    /// Keys of the `local` trunk instead of its loopback `source_cidrs`.
    pub local_trunk: Option<&'a str>,
    /// `api.listen`'s address instead of 127.0.0.1 (`0.0.0.0`: reachable
    /// from other namespaces too).
    pub api_ip: Option<&'a str>,
}

pub struct Daemon {
    pub child: Option<Child>,
    pub netns: Option<String>,
    pub ip: std::net::IpAddr,
    pub sip_port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub database_url: Option<String>,
}

/// The tests' REST API secret (HS256).
pub const JWT_SECRET: &str = "test-jwt-secret";

/// Share of the signal's power at `hz` (Goertzel): near 1 for a pure
/// tone at `hz`, near 0 for anything else.
pub fn tone_share(s: &[i16], hz: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for &x in s {
        let y = f64::from(x) + k * a - b;
        b = a;
        a = y;
    }
    let power = a * a + b * b - k * a * b;
    let total: f64 = s.iter().map(|&x| f64::from(x).powi(2)).sum();
    if total == 0.0 {
        0.0
    } else {
        2.0 * power / (total * s.len() as f64)
    }
}

/// Runs `f` inside network namespace `ns` when given (sockets made there
/// stay there), or here.
pub fn in_netns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    match ns {
        Some(ns) => media_userspace::testnet::in_netns(ns, f),
        None => f(),
    }
}

/// A fresh schema in the test server, as a database URL selecting it.
pub fn pg_schema_url() -> Option<String> {
    let base = match std::env::var("TEST_DATABASE_URL") {
        Ok(v) if !v.trim().is_empty() => v,
        _ if std::env::var("GATEWAY_TEST_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!(
                "SKIPPED (PostgreSQL): TEST_DATABASE_URL is not set and GATEWAY_TEST_SKIP_PG=1"
            );
            return None;
        }
        _ => panic!(
            "TEST_DATABASE_URL is not set: start a server with `eval \"$(scripts/pg-throwaway.sh start /tmp/gw-pg)\"` or set GATEWAY_TEST_SKIP_PG=1"
        ),
    };
    let schema = format!("mn_{}_{}", std::process::id(), free_port());
    let out = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql (apt package postgresql)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// A port held for one test process until dropped: see
/// [`reserved_port_pair`].
pub struct PortLease {
    pub port: u16,
    _lock: std::fs::File,
}

/// A port `p` with `p + 1` free too, for UDP and TCP on 127.0.0.1, that no
/// other test takes until the lease is dropped. For peers that bind the
/// next port themselves (baresip binds SIP over TLS on `p + 1`): an
/// ephemeral port's neighbour can be taken at any moment by any socket
/// bound to port 0, so these come from 7000–9999, below the kernel's
/// ephemeral range and the test daemons' media ranges (20000 and up), and
/// tests share them through lock files.
pub fn reserved_port_pair() -> PortLease {
    let dir = std::env::temp_dir().join("gateway-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock dir");
    let start = (std::process::id() as usize * 2) % 1500;
    for i in 0..1500 {
        let port = 7000 + (((start + i) % 1500) * 2) as u16;
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let free = [port, port + 1].iter().all(|&p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return PortLease { port, _lock: lock };
        }
    }
    panic!("no free port pair in 7000-9999");
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
        Self::start_opts(Opts {
            extra,
            ..Opts::default()
        })
    }

    /// Starts the daemon with a TLS listener (beside UDP and TCP) that
    /// presents `cert`/`key`, read again every second; the listener's
    /// address.
    pub fn start_tls(
        o: Opts,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> (Daemon, SocketAddr) {
        let tls_port = free_port();
        let listen =
            format!(r#"["udp:{{ip}}:{{port}}", "tcp:{{ip}}:{{port}}", "tls:{{ip}}:{tls_port}"]"#);
        let sip_extra = format!(
            "\n[sip.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_secs = 1\n",
            cert.display(),
            key.display()
        );
        let d = Daemon::start_opts(Opts {
            listen: Some(&listen),
            sip_extra: &sip_extra,
            ..o
        });
        let tls = SocketAddr::new(d.ip, tls_port);
        (d, tls)
    }

    pub fn start_with(extra: &str, database_url: Option<&str>) -> Daemon {
        Self::start_opts(Opts {
            extra,
            database_url,
            ..Opts::default()
        })
    }

    pub fn start_opts(o: Opts) -> Daemon {
        let Opts {
            extra,
            sip_extra,
            database_url,
            listen,
            media_extra,
            netns,
            ip,
            api_extra,
            xdp_pin_dir,
            local_trunk,
            api_ip,
        } = o;
        // The tests' AI servers, webhooks and far parties are on loopback
        // and in the benchmarking range the network namespaces use.
        let allowed_targets = if api_extra.contains("allowed_target_networks") {
            ""
        } else {
            r#"allowed_target_networks = ["127.0.0.0/8", "::1/128", "198.18.0.0/15"]"#
        };
        let local_trunk = local_trunk.unwrap_or(r#"source_cidrs = ["127.0.0.0/8", "::1/128"]"#);
        let ip = ip.unwrap_or("127.0.0.1");
        let dir = tempfile::tempdir().expect("tempdir");
        let sip_port = free_port();
        let metrics_port = free_port();
        let sip_extra = sip_extra.replace("{port}", &sip_port.to_string());
        let listen = listen
            .unwrap_or(r#"["udp:{ip}:{port}", "tcp:{ip}:{port}"]"#)
            .replace("{port}", &sip_port.to_string())
            .replace("{ip}", ip);
        // 1000 port pairs per daemon: a load test at 1000 calls/s holds a
        // few hundred calls at once.
        let media_base = 20000 + (sip_port % 20) * 2000;
        let cfg = format!(
            r#"
[sip]
listen = {listen}
realm = "test"
auth_secret = "test-secret"
drain_timeout_secs = 5
t1_ms = 500
{sip_extra}

[media]
bind_ip = "{ip}"
port_min = {media_base}
port_max = {media_max}
timeout_secs = 30
workers = 1
xdp_pin_dir = "{xdp_pin_dir}"
{media_extra}

[store]
url = "sqlite://{db}"
node_id = "node-{sip_port}"

[api]
listen = "{api_ip}:{metrics_port}"
jwt_secret = "{JWT_SECRET}"
{allowed_targets}
{api_extra}

[log]
level = "info"

[[accounts]]
id = "acct"
number_ranges = ["*"]

[[trunks]]
name = "local"
{local_trunk}

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
            media_max = media_base + 1999,
            api_ip = api_ip.unwrap_or("127.0.0.1"),
            db = dir.path().join("gw.db").display(),
        );
        let cfg_path = dir.path().join("gw.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            netns: netns.map(str::to_string),
            ip: ip.parse().expect("ip"),
            sip_port,
            metrics_port,
            dir,
            log,
            database_url: database_url.map(str::to_string),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_sip-daemon")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sip-daemon")),
        };
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.arg("--config")
            .arg(self.dir.path().join("gw.toml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .env_remove("DATABASE_URL");
        if let Some(url) = &self.database_url {
            cmd.env("DATABASE_URL", url);
        }
        self.child = Some(cmd.spawn().expect("spawn sip-daemon"));
        self.wait_ready();
    }

    /// SIGKILL: a crash, nothing flushed or closed.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the daemon again on the same config and database.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or crash first");
        self.spawn();
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id();
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }

    /// Sends SIGUSR2 (a restart that hands bridged calls over) without
    /// waiting.
    pub fn sigusr2(&self) {
        let pid = self.child.as_ref().expect("running").id();
        unsafe {
            libc::kill(pid as i32, libc::SIGUSR2);
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().expect("running").try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.sip_port)
    }

    /// Waits until a call record ends with `cause` (SQLite store).
    pub fn wait_cdr_cause(&self, cause: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("python3")
                .arg("-c")
                .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from calls where end_cause=?', (sys.argv[2],)).fetchone()[0])")
                .arg(self.db_path())
                .arg(cause)
                .output()
                .expect("python3 sqlite3");
            if String::from_utf8_lossy(&out.stdout).trim() != "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no call record ended with {cause}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("gw.db")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ip = self.ip;
        let sock = in_netns(self.netns.as_deref(), move || {
            UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap()
        });
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

    /// The config file the daemon runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gw.toml")
    }

    /// A bearer token from `sip-daemon token` (the CLI operators use).
    pub fn token(&self, account: Option<&str>, admin: bool) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sip-daemon"));
        cmd.arg("token").arg("--config").arg(self.config_path());
        if let Some(a) = account {
            cmd.args(["--account", a]);
        }
        if admin {
            cmd.arg("--admin");
        }
        let out = cmd.output().expect("sip-daemon token");
        assert!(
            out.status.success(),
            "sip-daemon token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// One REST request: (status, JSON body or Null, Retry-After).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value, Option<String>) {
        let (port, method, path) = (self.metrics_port, method.to_string(), path.to_string());
        let token = token.map(str::to_string);
        let body = body.cloned();
        in_netns(self.netns.as_deref(), move || {
            rest_request(port, &method, &path, token.as_deref(), body.as_ref())
        })
    }
    /// One plain GET on the HTTP port: (status, body text).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let (port, path) = (self.metrics_port, path.to_string());
        in_netns(self.netns.as_deref(), move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut resp = agent
                .get(format!("http://127.0.0.1:{port}{path}"))
                .call()
                .expect("HTTP GET");
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap_or_default())
        })
    }

    /// Plain-text Prometheus exposition.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let port = self.metrics_port;
        let mut s = in_netns(self.netns.as_deref(), move || {
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics")
        });
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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

/// One REST request to the API on `port` of this namespace's loopback.
fn rest_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let req = ureq::http::Request::builder().method(method).uri(&url);
    let req = match token {
        Some(t) => req.header("Authorization", format!("Bearer {t}")),
        None => req,
    };
    let mut resp = match body {
        Some(b) => agent
            .run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            )
            .expect("REST request"),
        None => agent.run(req.body(()).unwrap()).expect("REST request"),
    };
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, retry)
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

/// A minimal UDP SIP caller (UAC) for end-to-end tests.
pub struct Caller {
    pub sip: UdpSocket,
    pub daemon: SocketAddr,
    pub call_id: String,
    pub to_tag: Option<String>,
    /// The number dialled (an echo number unless changed).
    pub number: String,
    /// Payload types offered (first preferred) and their rtpmap lines.
    pub formats: String,
    pub rtpmaps: String,
    /// The From header's name-addr (display name and URI, no tag).
    pub from: Option<String>,
}

pub fn recv_status(sock: &UdpSocket, call_id: &str, want: u16) -> String {
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.contains(call_id) {
                continue;
            }
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status == want {
                return text;
            }
            assert!(status < 200, "expected {want}, got:\n{text}");
        }
    }
    panic!("no {want} for {call_id}");
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

impl Caller {
    pub fn new(daemon: SocketAddr, call_id: &str) -> Caller {
        Caller::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), daemon, call_id)
    }

    /// A caller on `sip` (bound where the test wants, e.g. in a network
    /// namespace); its SDP names that socket's address.
    pub fn with_socket(sip: UdpSocket, daemon: SocketAddr, call_id: &str) -> Caller {
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Caller {
            sip,
            daemon,
            call_id: call_id.into(),
            to_tag: None,
            number: "+15550001234".into(),
            from: None,
            formats: "0 101".into(),
            rtpmaps: "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n".into(),
        }
    }

    /// Offers G.722 (PT 9) with telephone-event instead of PCMU.
    pub fn offering_g722(mut self) -> Caller {
        self.formats = "9 101".into();
        self.rtpmaps = "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n".into();
        self
    }

    /// Dials `number` instead of the echo line.
    pub fn dialing(mut self, number: &str) -> Caller {
        self.number = number.into();
        self
    }

    pub fn request(&self, method: &str, cseq: u32, branch: &str, body: &str) -> String {
        let local = self.sip.local_addr().unwrap();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        let from = self
            .from
            .clone()
            .unwrap_or_else(|| format!("<sip:+14155550100@{local}>"));
        format!(
            "{method} sip:{num}@{d} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: {from};tag=caller1\r\nTo: <sip:{num}@{d}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{local}>\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
            d = self.daemon,
            num = self.number,
            cid = self.call_id,
            len = body.len()
        )
    }

    /// INVITE with an SDP offer for `sdp_port`; returns the daemon's RTP address.
    pub fn invite(&mut self, sdp_port: u16) -> SocketAddr {
        self.try_invite(sdp_port, 200)
            .expect("the call is answered")
    }

    /// INVITE; `Some(rtp address)` when answered 2xx, `None` when the
    /// final response is `want` (a rejection).
    pub fn try_invite(&mut self, sdp_port: u16, want: u16) -> Option<SocketAddr> {
        let ip = self.sip.local_addr().unwrap().ip();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {sdp_port} RTP/AVP {formats}\r\n{rtpmaps}a=ptime:20\r\na=sendrecv\r\n",
            formats = self.formats,
            rtpmaps = self.rtpmaps,
        );
        self.sip
            .send_to(
                self.request("INVITE", 1, "inv1", &sdp).as_bytes(),
                self.daemon,
            )
            .unwrap();
        let ok = recv_status(&self.sip, &self.call_id, want);
        if want >= 300 {
            self.sip
                .send_to(self.request("ACK", 1, "inv1", "").as_bytes(), self.daemon)
                .unwrap();
            return None;
        }
        let to = header(&ok, "To").unwrap();
        self.to_tag = Some(
            to.split(";tag=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string(),
        );
        assert!(ok.contains("m=audio "), "200 carries an SDP answer:\n{ok}");
        let preferred = self.formats.split(' ').next().unwrap_or("0");
        assert!(
            ok.contains(&format!("RTP/AVP {preferred}")),
            "answer keeps the preferred codec:\n{ok}"
        );
        let port: u16 = ok
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        self.sip
            .send_to(self.request("ACK", 1, "ack1", "").as_bytes(), self.daemon)
            .unwrap();
        let ip = ok
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        Some(SocketAddr::new(ip, port))
    }

    pub fn bye(&self) {
        self.bye_cseq(2);
    }

    /// INVITE and the final status, whatever it is: a rejection is ACKed,
    /// an answer ACKed and released with BYE.
    pub fn final_status(&mut self, sdp_port: u16) -> u16 {
        let status = self.call_and_hold(sdp_port);
        if status < 300 {
            self.bye();
        }
        status
    }

    /// INVITE and its final status; an answered call is ACKed and kept up,
    /// a refused one ACKed.
    pub fn call_and_hold(&mut self, sdp_port: u16) -> u16 {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {sdp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        self.sip
            .send_to(
                self.request("INVITE", 1, "inv1", &sdp).as_bytes(),
                self.daemon,
            )
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if !text.contains(&self.call_id) || status < 200 {
                continue;
            }
            if status < 300 {
                let to = header(&text, "To").unwrap_or_default();
                self.to_tag = to
                    .split(";tag=")
                    .nth(1)
                    .map(|t| t.split(';').next().unwrap_or(t).to_string());
                self.sip
                    .send_to(self.request("ACK", 1, "ack1", "").as_bytes(), self.daemon)
                    .unwrap();
            } else {
                self.sip
                    .send_to(self.request("ACK", 1, "inv1", "").as_bytes(), self.daemon)
                    .unwrap();
            }
            return status;
        }
        panic!("no final response for {}", self.call_id);
    }

    /// Waits for the daemon's BYE in this call and answers it 200.
    pub fn expect_bye(&self) {
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !(text.starts_with("BYE ") && text.contains(&self.call_id)) {
                continue;
            }
            let mut ok = String::from("SIP/2.0 200 OK\r\n");
            for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                for l in text.lines().filter(|l| {
                    l.split_once(':')
                        .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(h))
                }) {
                    ok.push_str(l);
                    ok.push_str("\r\n");
                }
            }
            ok.push_str("Content-Length: 0\r\n\r\n");
            self.sip.send_to(ok.as_bytes(), from).unwrap();
            return;
        }
        panic!("no BYE for {}", self.call_id);
    }

    /// BYE after other in-dialog requests used CSeq numbers up to `cseq - 1`.
    pub fn bye_cseq(&self, cseq: u32) {
        self.sip
            .send_to(
                self.request("BYE", cseq, "bye1", "").as_bytes(),
                self.daemon,
            )
            .unwrap();
        recv_status(&self.sip, &self.call_id, 200);
    }
}

/// Whether a test needing root and the XDP program can run: `true`, or
/// `false` (skipped, said on stderr) with GATEWAY_TEST_SKIP_XDP=1 unless
/// GATEWAY_REQUIRE_XDP is set; otherwise it panics naming `what` and why.
#[allow(dead_code)]
pub fn xdp_test_available(what: &str) -> bool {
    use media_userspace::xdp::{build_info, program_bytes};
    let skip = std::env::var("GATEWAY_TEST_SKIP_XDP").is_ok_and(|v| v == "1")
        && std::env::var("GATEWAY_REQUIRE_XDP").is_err();
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_string())
    } else if program_bytes().is_none() {
        Some(format!("XDP program not built in ({})", build_info()))
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if skip => {
            eprintln!("SKIPPED (GATEWAY_TEST_SKIP_XDP=1): {w}");
            false
        }
        Some(w) => panic!("{what} cannot run: {w}"),
    }
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One REGISTER from `sock` for `user` to `d`, with `extra` headers, and
/// its answer.
pub fn register(sock: &UdpSocket, d: &Daemon, user: &str, cseq: u32, extra: &str) -> String {
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreg{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r{cseq}\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{user}@test\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), d.sip_addr()).unwrap();
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains(&format!("CSeq: {cseq} REGISTER")) {
                return text;
            }
        }
    }
    panic!("no answer to REGISTER {cseq}");
}

/// The `alg` challenge of a 401.
pub fn challenge(resp: &str, alg: &str) -> sip_daemon::sip::digest::Challenge {
    resp.lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .map(|v| sip_daemon::sip::digest::Challenge::parse(v).unwrap())
        .find(|c| c.algorithm.as_str() == alg)
        .unwrap_or_else(|| panic!("no {alg} challenge in {resp}"))
}
