//! Load generator for the AI stream route: places `--calls` SIP calls
//! (UDP, PCMU) on a running daemon, plays the AI itself (a WebSocket
//! server speaking Twilio Media Streams), sends 20 ms RTP per call for
//! `--seconds`, and measures:
//!
//! - uplink latency: RTP sent by the caller → `media` frame read by the AI
//!   (each payload carries its send time, which survives the daemon's
//!   μ-law decode/encode because those bytes are exact round trips);
//! - lost frames: frames sent minus frames the AI received, per call;
//! - with `--downlink`: the AI sends 20 ms of audio per call every 20 ms,
//!   and AI → caller latency is measured the same way;
//! - the daemon's CPU time and resident memory (by `--daemon-pid`).
//!
//! With `--srtp` the callers offer RTP/SAVP keyed by SDES (over UDP: the
//! daemon's trunk must allow cleartext keying), protect what they send
//! and authenticate what they get, as SRTP phones do.
//!
//! Everything runs on loopback; every loop is bounded by `--seconds`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use media_userspace::srtp::{SrtpKey, SrtpKeys, SrtpSession, SrtpSuite};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    sip: SocketAddr,
    ai_port: u16,
    calls: usize,
    setup_rate: u32,
    seconds: u64,
    number: String,
    downlink: bool,
    daemon_pid: Option<u32>,
    srtp: bool,
}

fn args() -> Args {
    let mut a = Args {
        sip: "127.0.0.1:15060".parse().unwrap(),
        ai_port: 18765,
        calls: 100,
        setup_rate: 200,
        seconds: 10,
        number: "+15557000001".into(),
        downlink: false,
        daemon_pid: None,
        srtp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--sip" => a.sip = v().parse().expect("--sip ADDR"),
            "--ai-port" => a.ai_port = v().parse().expect("--ai-port N"),
            "--calls" => a.calls = v().parse().expect("--calls N"),
            "--setup-rate" => a.setup_rate = v().parse().expect("--setup-rate N"),
            "--seconds" => a.seconds = v().parse().expect("--seconds N"),
            "--number" => a.number = v(),
            "--downlink" => a.downlink = true,
            "--srtp" => a.srtp = true,
            "--daemon-pid" => a.daemon_pid = Some(v().parse().expect("--daemon-pid N")),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Bytes 0x10..=0x1f: one nibble each, never 0x7f (the only μ-law code
/// that does not survive decode/encode).
fn put_u64(buf: &mut [u8], v: u64) {
    for (i, b) in buf.iter_mut().take(16).enumerate() {
        *b = 0x10 | ((v >> (60 - 4 * i)) & 0xf) as u8;
    }
}

fn get_u64(buf: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in buf.get(..16)? {
        if b & 0xf0 != 0x10 {
            return None;
        }
        v = (v << 4) | u64::from(b & 0x0f);
    }
    Some(v)
}

/// Payload: send time (ns since `epoch`), call index, frame number.
fn stamp(payload: &mut [u8], epoch: Instant, call: u64, frame: u64) {
    put_u64(&mut payload[0..16], epoch.elapsed().as_nanos() as u64);
    put_u64(&mut payload[16..32], call);
    put_u64(&mut payload[32..48], frame);
}

fn read_stamp(payload: &[u8]) -> Option<(u64, u64, u64)> {
    Some((
        get_u64(&payload[0..16])?,
        get_u64(payload.get(16..32)?)?,
        get_u64(payload.get(32..48)?)?,
    ))
}

#[derive(Default)]
struct Samples {
    /// Latencies in µs.
    lat: Mutex<Vec<u32>>,
    frames: AtomicU64,
}

impl Samples {
    fn add(&self, epoch: Instant, sent_ns: u64) {
        let now = epoch.elapsed().as_nanos() as u64;
        let us = (now.saturating_sub(sent_ns) / 1000) as u32;
        self.lat.lock().unwrap().push(us);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, name: &str) {
        let mut v = self.lat.lock().unwrap().clone();
        if v.is_empty() {
            println!("{name}: no samples");
            return;
        }
        v.sort_unstable();
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "{name}: frames {} p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
            v.len(),
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            p(1.0)
        );
    }
}

struct Ai {
    epoch: Instant,
    uplink: Samples,
    /// Frames received per call (index from the payload).
    per_call: Mutex<HashMap<u64, u64>>,
    connected: AtomicU64,
    stops: AtomicU64,
    downlink: bool,
    deadline: Instant,
}

async fn ai_conn(tcp: tokio::net::TcpStream, ai: Arc<Ai>) {
    let _ = tcp.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (tx, mut rx) = ws.split();
    let mut tx = Some(tx);
    let mut sender = None;
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if let Some(i) = t.find("\"payload\":\"") {
            let rest = &t[i + 11..];
            let end = rest.find('"').unwrap_or(rest.len());
            if let Ok(p) = BASE64.decode(&rest[..end])
                && let Some((sent, call, _)) = read_stamp(&p)
            {
                ai.uplink.add(ai.epoch, sent);
                *ai.per_call.lock().unwrap().entry(call).or_default() += 1;
            }
        } else if t.contains("\"event\":\"start\"") {
            let index = ai.connected.fetch_add(1, Ordering::Relaxed);
            if ai.downlink
                && let Some(mut tx) = tx.take()
            {
                // 20 ms of stamped audio every 20 ms, until the deadline.
                let ai2 = ai.clone();
                let (stx, mut srx) = tokio::sync::mpsc::channel::<String>(4);
                sender = Some(tokio::spawn(async move {
                    // Each AI speaks at its own phase against the daemon's
                    // 20 ms packet clock, spread evenly over calls.
                    let phase = Duration::from_micros(index * 7919 % 20_000);
                    tokio::time::sleep(phase).await;
                    let mut tick = tokio::time::interval(Duration::from_millis(20));
                    // A late tick must not become a burst: that would be
                    // queueing delay of our own making, not the daemon's.
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    let mut frame = 0u64;
                    let mut payload = [0xffu8; 160];
                    while Instant::now() < ai2.deadline {
                        tick.tick().await;
                        stamp(&mut payload, ai2.epoch, 0, frame);
                        frame += 1;
                        let msg = format!(
                            r#"{{"event":"media","streamSid":"x","media":{{"payload":"{}"}}}}"#,
                            BASE64.encode(payload)
                        );
                        if stx.send(msg).await.is_err() {
                            return;
                        }
                    }
                }));
                tokio::spawn(async move {
                    while let Some(m) = srx.recv().await {
                        if tx.send(Message::text(m)).await.is_err() {
                            return;
                        }
                    }
                });
                continue;
            }
        } else if t.contains("\"event\":\"stop\"") {
            ai.stops.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(s) = sender {
        s.abort();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime+stime of the process in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let hz = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(0.0)
}

struct CallLeg {
    call_id: String,
    to_tag: String,
    rtp: UdpSocket,
    daemon_rtp: SocketAddr,
    /// With `--srtp`: what protects our packets and what authenticates
    /// the daemon's (one session each way, used by different threads).
    srtp: Option<(SrtpSession, SrtpSession)>,
}

/// The callers' SDES key (one for all: each call has its own SSRC).
const CALLER_KEY: [u8; 30] = [0x5a; 30];

/// Sessions for a call whose answer declared `their` key.
fn srtp_sessions(answer: &str) -> Option<(SrtpSession, SrtpSession)> {
    let line = answer.lines().find_map(|l| l.strip_prefix("a=crypto:"))?;
    let b64 = line.split("inline:").nth(1)?.split(['|', ' ']).next()?;
    let theirs = BASE64.decode(b64.trim_end()).ok()?;
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let keys = SrtpKeys {
        suite,
        tx: SrtpKey::new(suite, &CALLER_KEY)?,
        rx: SrtpKey::new(suite, &theirs)?,
        replay_window: 64,
    };
    Some((SrtpSession::new(keys).ok()?, SrtpSession::new(keys).ok()?))
}

fn request(
    method: &str,
    a: &Args,
    local: SocketAddr,
    call_id: &str,
    to_tag: &str,
    cseq: u32,
    body: &str,
) -> String {
    let tt = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{n}@{d} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:+14155550100@{local}>;tag=load\r\nTo: <sip:{n}@{d}>{tt}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:load@{local}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len(),
        n = a.number,
        d = a.sip,
    )
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

/// Places the calls; returns the answered ones.
fn place_calls(a: &Args, sip: &UdpSocket) -> Vec<CallLeg> {
    let local = sip.local_addr().unwrap();
    let mut pending: HashMap<String, UdpSocket> = HashMap::new();
    let mut answered = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / f64::from(a.setup_rate.max(1)));
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut next = 0usize;
    let deadline =
        started + Duration::from_secs(a.calls as u64 / u64::from(a.setup_rate.max(1)) + 15);
    while answered.len() < a.calls && Instant::now() < deadline {
        if next < a.calls && Instant::now() >= started + gap * next as u32 {
            let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
            rtp.set_nonblocking(true).unwrap();
            let port = rtp.local_addr().unwrap().port();
            let mut sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
            );
            if a.srtp {
                sdp = sdp.replace("RTP/AVP", "RTP/SAVP")
                    + &format!(
                        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
                        BASE64.encode(CALLER_KEY)
                    );
            }
            let cid = format!("load-{next}-{}", std::process::id());
            sip.send_to(
                request("INVITE", a, local, &cid, "", 1, &sdp).as_bytes(),
                a.sip,
            )
            .unwrap();
            pending.insert(cid, rtp);
            next += 1;
        }
        if let Ok((n, _)) = sip.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let Some(cid) = header(&text, "Call-ID").map(str::to_string) else {
                continue;
            };
            if status < 200 {
                continue;
            }
            let Some(rtp) = pending.remove(&cid) else {
                continue;
            };
            if status != 200 {
                eprintln!("call {cid} rejected: {status}");
                continue;
            }
            let to_tag = header(&text, "To")
                .and_then(|t| t.split(";tag=").nth(1))
                .map(|t| t.split(';').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let port: u16 = text
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            sip.send_to(
                request("ACK", a, local, &cid, &to_tag, 1, "").as_bytes(),
                a.sip,
            )
            .unwrap();
            let srtp = if a.srtp {
                let Some(s) = srtp_sessions(&text) else {
                    eprintln!("call {cid}: the answer has no usable SDES key");
                    continue;
                };
                Some(s)
            } else {
                None
            };
            answered.push(CallLeg {
                call_id: cid,
                to_tag,
                rtp,
                daemon_rtp: SocketAddr::from(([127, 0, 0, 1], port)),
                srtp,
            });
        }
        if next >= a.calls && pending.is_empty() {
            break;
        }
    }
    answered
}

fn main() {
    let a = args();
    let epoch = Instant::now();
    let media_secs = a.seconds;
    let setup_secs = a.calls as u64 / u64::from(a.setup_rate.max(1)) + 5;
    let ai = Arc::new(Ai {
        epoch,
        uplink: Samples::default(),
        per_call: Mutex::new(HashMap::new()),
        connected: AtomicU64::new(0),
        stops: AtomicU64::new(0),
        downlink: a.downlink,
        deadline: Instant::now() + Duration::from_secs(setup_secs + media_secs),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", a.ai_port)))
        .expect("AI port");
    let ai2 = ai.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(ai_conn(tcp, ai2.clone()));
        }
    });

    let rss_idle = a.daemon_pid.map(rss_kib).unwrap_or(0);
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let t_setup = Instant::now();
    let mut calls = place_calls(&a, &sip);
    println!(
        "answered {}/{} calls in {:.1} s; AI sockets {}",
        calls.len(),
        a.calls,
        t_setup.elapsed().as_secs_f64(),
        ai.connected.load(Ordering::Relaxed)
    );

    // Downlink receiver: a thread draining every caller socket.
    let downlink = Arc::new(Samples::default());
    let stop_rx = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Frames the AI sent while calls were still being set up wait in the
    // caller sockets until this thread starts: only later ones count.
    let measure_from = epoch.elapsed().as_nanos() as u64;
    let rx_thread = a.downlink.then(|| {
        let mut socks: Vec<(UdpSocket, Option<SrtpSession>)> = calls
            .iter_mut()
            .map(|c| {
                (
                    c.rtp.try_clone().unwrap(),
                    c.srtp.as_mut().map(|(_, rx)| {
                        std::mem::replace(rx, SrtpSession::new(*rx.keys()).expect("keys"))
                    }),
                )
            })
            .collect();
        let downlink = downlink.clone();
        let stop_rx = stop_rx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop_rx.load(Ordering::Relaxed) {
                let mut any = false;
                for (s, srtp) in &mut socks {
                    while let Ok(n) = s.recv(&mut buf) {
                        any = true;
                        let n = match srtp {
                            Some(rx) => match rx.unprotect_rtp(&mut buf[..n]) {
                                Ok(m) => m,
                                Err(_) => continue,
                            },
                            None => n,
                        };
                        if n > 12
                            && let Some((sent, _, _)) = read_stamp(&buf[12..n])
                            && sent >= measure_from
                        {
                            downlink.add(epoch, sent);
                        }
                    }
                }
                if !any {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    });

    // Uplink: 20 ms of stamped PCMU per call per tick.
    let cpu0 = a.daemon_pid.map(cpu_secs).unwrap_or(0.0);
    let own0 = cpu_secs(std::process::id());
    let t0 = Instant::now();
    let ticks = media_secs * 50;
    let mut sent = 0u64;
    let mut pkt = [0xffu8; 172 + 16];
    // Calls are not in phase with each other: call i sends at offset
    // i/N of the 20 ms interval, as independent phones would.
    let n = calls.len().max(1) as u64;
    for tick in 0..ticks {
        for (i, c) in calls.iter_mut().enumerate() {
            if i % 16 == 0 {
                let due = t0
                    + Duration::from_millis(20 * tick)
                    + Duration::from_micros(20_000 * i as u64 / n);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
            pkt[0] = 0x80;
            pkt[1] = if tick == 0 { 0x80 } else { 0 };
            pkt[2..4].copy_from_slice(&(tick as u16).to_be_bytes());
            pkt[4..8].copy_from_slice(&((tick * 160) as u32).to_be_bytes());
            pkt[8..12].copy_from_slice(&(0x1000_0000u32 + i as u32).to_be_bytes());
            stamp(&mut pkt[12..172], epoch, i as u64, tick);
            // SRTP encrypts in place: the rest of the payload is silence
            // again for every packet.
            pkt[60..172].fill(0xff);
            let len = match c.srtp.as_mut() {
                Some((tx, _)) => match tx.protect_rtp_in_place(&mut pkt, 172) {
                    Ok(n) => n,
                    Err(_) => continue,
                },
                None => 172,
            };
            if c.rtp.send_to(&pkt[..len], c.daemon_rtp).is_ok() {
                sent += 1;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let media_wall = t0.elapsed().as_secs_f64();
    let cpu1 = a.daemon_pid.map(cpu_secs).unwrap_or(0.0);
    let own1 = cpu_secs(std::process::id());
    let rss_active = a.daemon_pid.map(rss_kib).unwrap_or(0);

    let received: u64 = ai.per_call.lock().unwrap().values().sum();
    let short_calls = ai
        .per_call
        .lock()
        .unwrap()
        .values()
        .filter(|&&n| n < ticks)
        .count();
    println!(
        "uplink: sent {sent} frames, AI received {received}, lost {} ({} calls short)",
        sent.saturating_sub(received),
        short_calls
            + calls
                .len()
                .saturating_sub(ai.per_call.lock().unwrap().len())
    );
    ai.uplink.report("uplink RTP in -> WebSocket out");
    if a.downlink {
        downlink.report("downlink WebSocket in -> RTP out");
    }
    if let Some(pid) = a.daemon_pid {
        println!(
            "daemon CPU during media: {:.1}% of one core ({:.2} s over {:.1} s)",
            100.0 * (cpu1 - cpu0) / media_wall,
            cpu1 - cpu0,
            media_wall
        );
        println!(
            "daemon RSS: idle {} KiB, with {} calls {} KiB: {:.1} KiB per call",
            rss_idle,
            calls.len(),
            rss_active,
            (rss_active.saturating_sub(rss_idle)) as f64 / calls.len().max(1) as f64
        );
        let _ = pid;
    }
    println!(
        "load generator CPU during media: {:.1}% of one core",
        100.0 * (own1 - own0) / media_wall
    );

    // Hang up.
    let local = sip.local_addr().unwrap();
    for c in &calls {
        let _ = sip.send_to(
            request("BYE", &a, local, &c.call_id, &c.to_tag, 2, "").as_bytes(),
            a.sip,
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let end = Instant::now() + Duration::from_secs(10);
    while ai.stops.load(Ordering::Relaxed) < calls.len() as u64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_rx.store(true, Ordering::Relaxed);
    if let Some(t) = rx_thread {
        let _ = t.join();
    }
    println!("AI streams stopped: {}", ai.stops.load(Ordering::Relaxed));
}
