//! Relayed RTP, side by side in one run: our XDP fast path, our userspace
//! relay, rtpengine 10.5 in userspace (Debian `rtpengine-daemon`, kernel
//! table off), and the drop-at-relay ceiling (the XDP program dropping at
//! the gateway's ingress: what the generator and the veth can deliver).
//!
//! One topology (media_userspace::testnet: caller ns — gateway ns — far ns,
//! veth pairs, 198.18.0.0/15), one generator: a thread in the caller
//! namespace sending 172-byte RTP packets with sendmmsg(2) to each flow's
//! relay port, paced to `--rate` packets/s (or as fast as it can with
//! `--rate max`). The sink is the XDP program in drop mode on the far
//! host's veth, counting per flow: its cost is the same in every mode.
//! CPU is the whole machine's busy time (/proc/stat) over the window,
//! since the XDP path runs in softirq context charged to no process; the
//! relay's own cost per packet is that minus the ceiling's (generator and
//! drop) at the same rate. The relay side runs on CPU 0 (our media worker,
//! rtpengine's one worker thread), the generator on CPU 1.
//!
//! Needs root, iproute2, ethtool and the XDP program built in; rtpengine
//! mode needs `rtpengine` (scripts/setup.sh test). Every loop is bounded:
//! `--secs` seconds of traffic per mode.
//!
//! The `-srtp` modes relay SRTP to plain RTP, as a gateway between an
//! SDES-keyed carrier and a plain far end does: the generator protects
//! every packet (AES_CM_128_HMAC_SHA1_80, one key, an SSRC per flow) and
//! the relay (ours, or rtpengine keyed through its ng offer) authenticates
//! and decrypts it before sending it on in the clear.
//!
//!   relay-bench [--flows 100] [--rate 50000|max] [--secs 5]
//!               [--modes ceiling,xdp,userspace,rtpengine,userspace-srtp,rtpengine-srtp]

use media_userspace::codec::Codec;
use media_userspace::control::{LegMedia, MediaCommand, MediaEvent};
use media_userspace::engine::{EngineConfig, MediaEngine};
use media_userspace::offload::XdpPath;
use media_userspace::srtp::{SrtpKey, SrtpKeys, SrtpSession, SrtpSuite};
use media_userspace::testnet::{CALLER, FAR, GW_C, Topology};
use media_userspace::xdp::{FLAG_DROP, RelayKey, RelayRule, XdpMode, XdpOffload};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALLER_PORT: u16 = 7000;
const PKT_LEN: usize = 172;
/// The caller's SDES master key and salt in the `-srtp` modes.
const SRTP_KEY: [u8; 30] = [0x42; 30];
const SRTP_SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

fn srtp_key() -> SrtpKey {
    SrtpKey::new(SRTP_SUITE, &SRTP_KEY).expect("a 30-byte key")
}

struct Args {
    flows: usize,
    rate: Option<u64>,
    secs: u64,
    modes: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        flows: 100,
        rate: Some(50_000),
        secs: 5,
        modes: ["ceiling", "xdp", "userspace", "rtpengine"]
            .map(String::from)
            .to_vec(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--flows" => a.flows = v[i + 1].parse().expect("--flows N"),
            "--rate" => a.rate = (v[i + 1] != "max").then(|| v[i + 1].parse().expect("--rate N")),
            "--secs" => a.secs = v[i + 1].parse().expect("--secs N"),
            "--modes" => a.modes = v[i + 1].split(',').map(String::from).collect(),
            o => panic!("unknown option {o}"),
        }
        i += 2;
    }
    assert!(a.flows > 0 && a.flows <= 30_000 && a.secs > 0 && a.secs <= 120);
    a
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) pins this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Busy and total CPU time of the machine in clock ticks (/proc/stat).
fn cpu_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime (clock ticks) of the threads or processes whose `stat`
/// files are given.
fn stat_ticks(stats: &[std::path::PathBuf]) -> u64 {
    stats
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| {
            // Fields after the command (which may hold spaces) in parens.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// `stat` files of this process's threads named `name`.
fn own_threads(name: &str) -> Vec<std::path::PathBuf> {
    threads_in("self", name)
}

/// `run_time_ns` and `run_cnt` of BPF program `id` (kernel bpf_stats,
/// switched on by `main`), read with bpftool.
fn prog_stats(id: Option<u32>) -> Option<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id?.to_string(), "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["id"].as_u64()?;
    // bpftool leaves the fields out while they are zero.
    Some((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// Time the XDP program itself spent per run over a window.
fn per_run(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, c0), (t1, c1)) = (before?, after?);
    (c1 > c0).then(|| (t1 - t0) as f64 / (c1 - c0) as f64)
}

fn rtp(seq: u16, ssrc: u32) -> [u8; PKT_LEN] {
    let mut p = [0u8; PKT_LEN];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// The far host's sink: the XDP program dropping and counting every
/// flow's packets on its veth.
struct Sink {
    xdp: XdpOffload,
    keys: Vec<RelayKey>,
}

impl Sink {
    fn delivered(&self) -> u64 {
        self.keys
            .iter()
            .filter_map(|k| self.xdp.counters(k).ok().flatten())
            .map(|c| c.packets)
            .sum()
    }
}

fn drop_rule() -> RelayRule {
    RelayRule::v4([0; 4], 0, [0; 4], 0, [0; 6], [0; 6], 0, FLAG_DROP)
}

/// Sends to `targets` round robin in batches of 32 until `stop`, paced
/// to `rate` packets/s when given, protecting each packet with SRTP when
/// `srtp`; counts what it sent.
fn generator(
    sock: UdpSocket,
    targets: Vec<SocketAddrV4>,
    rate: Option<u64>,
    srtp: bool,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    pin(1);
    const BATCH: usize = 32;
    let addrs: Vec<libc::sockaddr_in> = targets
        .iter()
        .map(|a| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        })
        .collect();
    let mut pkts = vec![[0u8; PKT_LEN + 16]; BATCH];
    let len = if srtp {
        PKT_LEN + SRTP_SUITE.rtp_overhead()
    } else {
        PKT_LEN
    };
    // One sending context per flow (an SSRC each, as callers have).
    let mut protect: Vec<SrtpSession> = if srtp {
        let k = srtp_key();
        (0..addrs.len())
            .map(|_| {
                SrtpSession::new(SrtpKeys {
                    suite: SRTP_SUITE,
                    tx: k,
                    rx: k,
                    replay_window: 64,
                })
                .expect("keys")
            })
            .collect()
    } else {
        Vec::new()
    };
    // Each flow's own sequence: one step per packet of that flow (a
    // repeated number would be a replay to an SRTP receiver).
    let mut seqs = vec![0u16; addrs.len()];
    let mut next = 0usize;
    let start = Instant::now();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
        for (i, p) in pkts.iter_mut().enumerate() {
            let flow = (next + i) % addrs.len();
            p[..PKT_LEN].copy_from_slice(&rtp(seqs[flow], flow as u32 + 1));
            seqs[flow] = seqs[flow].wrapping_add(1);
            if let Some(s) = protect.get_mut(flow) {
                s.protect_rtp_in_place(p, PKT_LEN).expect("protect");
            }
            iov.push(libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for (i, v) in iov.iter_mut().enumerate() {
            let flow = (next + i) % addrs.len();
            // SAFETY: msghdr is plain data; pointers set below stay valid
            // for the sendmmsg call.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&addrs[flow] as *const libc::sockaddr_in).cast_mut().cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            hdrs.push(h);
        }
        // SAFETY: hdrs, iov, pkts and addrs outlive the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            total += n as u64;
            sent.store(total, Ordering::Relaxed);
        }
        next = (next + BATCH) % addrs.len();
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(total as f64 / r as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// One measured window: what the generator sent, what arrived, CPU.
struct Run {
    /// ns per run of the XDP program itself (kernel bpf_stats), for the
    /// modes that run it at the gateway.
    prog_ns: Option<f64>,
    /// Everything the generator sent and what of it arrived (loss).
    sent: u64,
    delivered: u64,
    /// What arrived within the measured window (rates and CPU per packet).
    window: u64,
    /// CPU of the relay itself: its threads (ours, rtpengine) or the NAPI
    /// kernel thread running the XDP program.
    relay_ticks: u64,
    busy_ticks: u64,
    total_ticks: u64,
    secs: f64,
}

impl Run {
    fn pps(&self) -> f64 {
        self.window as f64 / self.secs
    }
    fn loss(&self) -> f64 {
        1.0 - self.delivered as f64 / self.sent.max(1) as f64
    }
    fn ns_per_packet(&self) -> f64 {
        // USER_HZ is 100 on Linux.
        self.busy_ticks as f64 * 1e7 / self.window.max(1) as f64
    }
    fn relay_ns_per_packet(&self) -> f64 {
        self.relay_ticks as f64 * 1e7 / self.window.max(1) as f64
    }
    fn cpu_share(&self) -> f64 {
        self.busy_ticks as f64 / self.total_ticks.max(1) as f64
    }
}

/// Runs the generator against `targets` (after 0.5 s of warm-up) for
/// `secs`, counting delivery with `delivered`. Loss is counted over the
/// whole run, from before the first packet to after the last arrived:
/// sampling `delivered` mid-stream takes long with thousands of flows
/// (one map read each), and packets landing during that read would show
/// as lost.
fn measure(
    t: &Topology,
    targets: Vec<SocketAddrV4>,
    a: &Args,
    srtp: bool,
    delivered: &dyn Fn() -> u64,
    relay: &[std::path::PathBuf],
) -> Run {
    let sock = t.run(0, || {
        UdpSocket::bind((CALLER, CALLER_PORT)).expect("generator socket")
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let base = delivered();
    let (st, se, rate) = (stop.clone(), sent.clone(), a.rate);
    let g = std::thread::spawn(move || generator(sock, targets, rate, srtp, st, se));
    std::thread::sleep(Duration::from_millis(500));
    let (d0, c0, r0, t0) = (delivered(), cpu_ticks(), stat_ticks(relay), Instant::now());
    std::thread::sleep(Duration::from_secs(a.secs));
    let (c1, r1, t1) = (cpu_ticks(), stat_ticks(relay), Instant::now());
    stop.store(true, Ordering::Relaxed);
    g.join().expect("generator");
    // Packets in flight at the end of the window arrive within 200 ms.
    std::thread::sleep(Duration::from_millis(200));
    let d1 = delivered();
    Run {
        prog_ns: None,
        sent: sent.load(Ordering::Relaxed),
        delivered: d1 - base,
        window: d1 - d0,
        relay_ticks: r1 - r0,
        busy_ticks: c1.0 - c0.0,
        total_ticks: c1.1 - c0.1,
        secs: (t1 - t0).as_secs_f64(),
    }
}

/// The far phone (one socket: every call's far leg goes to it, which keeps
/// descriptors for the relay) and the sink counting what reaches it.
fn far_side(t: &Topology) -> (UdpSocket, Sink) {
    let sock = t.run(2, || UdpSocket::bind((FAR, 0)).expect("far socket"));
    let port = sock.local_addr().unwrap().port();
    let sink = t.run(2, move || {
        let mut xdp = XdpOffload::load("f0", XdpMode::Native).expect("sink program on f0");
        let key = RelayKey::v4(FAR.parse::<std::net::Ipv4Addr>().unwrap().octets(), port);
        xdp.insert_rule(key, drop_rule()).expect("sink rule");
        Sink {
            xdp,
            keys: vec![key],
        }
    });
    (sock, sink)
}

/// Moves the gateway's NAPI polling of `dev` (where its XDP program runs)
/// into a kernel thread on CPU 0, the relay's core: by default veth polls
/// on the sending CPU, the generator's.
fn napi_on_cpu0(t: &Topology, dev: &str) -> Vec<std::path::PathBuf> {
    napi_on(t, 1, dev, 0)
}

/// Moves the NAPI polling of `dev` in namespace `ns` into a kernel thread
/// on `cpu`; the `stat` files of that thread.
fn napi_on(t: &Topology, ns: usize, dev: &str, cpu: usize) -> Vec<std::path::PathBuf> {
    let ok = t
        .exec(ns)
        .args([
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{dev}/threaded"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("threaded NAPI not available on {dev}: XDP runs on the generator's CPU");
        return Vec::new();
    }
    let mut stats = Vec::new();
    std::thread::sleep(Duration::from_millis(100));
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(&format!("napi/{dev}-")) {
            let pid = e.file_name().to_string_lossy().to_string();
            let _ = std::process::Command::new("taskset")
                .args(["-p", "-c", &cpu.to_string(), &pid])
                .output();
            // NAPI normally runs in softirq, ahead of any process on its
            // core; as a thread it gets a real-time priority to match
            // (else a busy media worker delays it and the veth ring
            // overflows).
            let _ = std::process::Command::new("chrt")
                .args(["-f", "-p", "50", &pid])
                .output();
            stats.push(e.path().join("stat"));
        }
    }
    stats
}

/// Prints the veth counters of drops and errors that are not zero (where
/// packets the relay did not deliver were lost).
fn veth_drops(t: &Topology) {
    for (i, dev) in [(0, "c0"), (1, "gc"), (1, "gf"), (2, "f0")] {
        let Ok(out) = t.exec(i).args(["ethtool", "-S", dev]).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let lost: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("drop") || l.contains("err"))
            .filter(|l| !l.ends_with(": 0"))
            .collect();
        if !lost.is_empty() {
            eprintln!("{dev}: {}", lost.join(", "));
        }
        // The device's own drop counters (a full veth ring drops here).
        if let Ok(out) = t.exec(i).args(["ip", "-s", "link", "show", dev]).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for (k, l) in lines.iter().enumerate() {
                if (l.starts_with("RX:") || l.starts_with("TX:"))
                    && let Some(v) = lines.get(k + 1)
                {
                    let f: Vec<&str> = v.split_whitespace().collect();
                    if f.get(3).is_some_and(|d| *d != "0") {
                        eprintln!("{dev} {}: dropped {}", &l[..2], f[3]);
                    }
                }
            }
        }
    }
}

fn gw_c(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(GW_C.parse().unwrap(), port)
}

fn ceiling(t: &Topology, a: &Args) -> Run {
    let flows = a.flows;
    let (xdp, keys) = t.run(1, move || {
        let mut xdp = XdpOffload::load("gc", XdpMode::Native).expect("XDP on gc");
        let keys: Vec<RelayKey> = (0..flows)
            .map(|i| {
                RelayKey::v4(
                    GW_C.parse::<std::net::Ipv4Addr>().unwrap().octets(),
                    30_000 + 2 * i as u16,
                )
            })
            .collect();
        for k in &keys {
            xdp.insert_rule(*k, drop_rule()).expect("drop rule");
        }
        (xdp, keys)
    });
    let napi = napi_on_cpu0(t, "gc");
    let targets = keys.iter().map(|k| gw_c(k.port())).collect();
    let id = xdp.program_id();
    let sink = Sink { xdp, keys };
    let before = prog_stats(id);
    let mut run = measure(t, targets, a, false, &|| sink.delivered(), &napi);
    run.prog_ns = per_run(before, prog_stats(id));
    veth_drops(t);
    run
}

fn media(remote: SocketAddr) -> LegMedia {
    LegMedia {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: None,
        ptime_ms: 20,
        remote: Some(remote),
        send: true,
        srtp: None,
    }
}

/// The caller's side of an SRTP-to-RTP relay: the caller sends under
/// [`SRTP_KEY`]; we send to it under a key of our own.
fn srtp_media(remote: SocketAddr) -> LegMedia {
    LegMedia {
        srtp: Some(SrtpKeys {
            suite: SRTP_SUITE,
            tx: SrtpKey::new(SRTP_SUITE, &[0x24; 30]).expect("key"),
            rx: srtp_key(),
            replay_window: 64,
        }),
        ..media(remote)
    }
}

/// Calls one engine process relays in the XDP mode's concurrency runs: a
/// relayed call holds four sockets (RTP and RTCP, both legs) and this
/// sandbox caps a process at 20,000 descriptors without letting it raise
/// the cap, so larger runs split the calls over several engine processes
/// sharing one pinned program and its maps (as successive runs of the
/// daemon do). Production sets the cap (LimitNOFILE) instead.
const CALLS_PER_PROCESS: usize = 4_000;

/// Ports each engine process allocates from (RTP even, RTCP odd).
fn port_range(process: usize, processes: usize) -> (u16, u16) {
    let span = 45_000 / processes;
    let min = 20_000 + process * span;
    (min as u16, (min + span - 1) as u16)
}

/// Opens `flows` relays on `engine` (legs numbered from `first_leg`)
/// between `caller` and `far`; their (caller side, far side) ports.
fn open_relays(
    engine: &MediaEngine,
    flows: usize,
    first_leg: u64,
    caller: SocketAddr,
    far: SocketAddr,
    srtp: bool,
) -> Vec<[u16; 2]> {
    (0..flows)
        .map(|i| {
            let a = if srtp {
                srtp_media(caller)
            } else {
                media(caller)
            };
            match engine.command(MediaCommand::OpenRelay {
                legs: [first_leg + 2 * i as u64, first_leg + 1 + 2 * i as u64],
                media: [a, media(far)],
                timeout: Duration::from_secs(300),
            }) {
                Some(MediaEvent::RelayOpened { locals, .. }) => {
                    [locals[0].port(), locals[1].port()]
                }
                other => panic!("relay: {other:?}"),
            }
        })
        .collect()
}

fn start_engine(xdp: Option<Arc<XdpPath>>, ports: (u16, u16)) -> MediaEngine {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    MediaEngine::start(
        EngineConfig {
            bind_ip: GW_C.parse().unwrap(),
            port_min: ports.0,
            port_max: ports.1,
            workers: 1,
            prefer_io_uring: false,
            xdp,
            connect_guard: None,
        },
        events,
    )
    .expect("engine")
}

/// The XDP program pinned in `dir` and attached (through pinned links) on
/// the gateway's veths: a program and maps shared with the other engine
/// processes; the last one attached runs.
fn pinned_path(dir: &std::path::Path) -> XdpPath {
    let mut o = XdpOffload::load_pinned(dir).expect("load XDP pinned");
    for dev in ["gc", "gf"] {
        o.attach_pinned(dev, XdpMode::Native, dir)
            .expect("attach pinned");
    }
    XdpPath::new(o, Some(GW_C.parse().unwrap()), false)
}

/// `relay-bench --engine-child DIR FLOWS FIRST_LEG PROCESS PROCESSES CALLER FAR`,
/// run by `ip netns exec` in the gateway namespace: one more engine
/// process on the pinned program. Prints each relay's ports, then
/// `ready`, and relays until its stdin closes.
fn engine_child(v: &[String]) {
    let arg = |i: usize| {
        v.get(i)
            .unwrap_or_else(|| panic!("--engine-child: argument {i}"))
    };
    let dir = std::path::PathBuf::from(arg(0));
    let flows: usize = arg(1).parse().expect("flows");
    let first_leg: u64 = arg(2).parse().expect("first leg");
    let process: usize = arg(3).parse().expect("process");
    let processes: usize = arg(4).parse().expect("processes");
    let caller: SocketAddr = arg(5).parse().expect("caller");
    let far: SocketAddr = arg(6).parse().expect("far");
    pin(0);
    let path = Arc::new(pinned_path(&dir));
    let engine = start_engine(Some(path), port_range(process, processes));
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for p in open_relays(&engine, flows, first_leg, caller, far, false) {
        writeln!(out, "{} {}", p[0], p[1]).expect("stdout");
    }
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    drop(engine);
}

/// A bpffs mounted for one run's pins; unpinned and unmounted on drop.
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn mount() -> PinDir {
        let dir = std::env::temp_dir().join(format!("relay-bench-bpffs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", dir.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t bpf bpf {}", dir.display());
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = XdpOffload::unpin(&self.0.join("p"));
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The other engine processes of a run: each one's child handle and the
/// `stat` files of its media worker.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

/// `stat` files of process `pid`'s threads named `name`.
fn threads_of(pid: u32, name: &str) -> Vec<std::path::PathBuf> {
    threads_in(&pid.to_string(), name)
}

/// `stat` files of the threads named `name` of `/proc/<proc>`.
fn threads_in(proc: &str, name: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{proc}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|e| e.path().join("stat"))
        .collect()
}

/// Our relay (with or without the XDP path) on one media worker, CPU 0;
/// with XDP and more than [`CALLS_PER_PROCESS`] calls, on several engine
/// processes sharing the pinned program (their workers all on CPU 0 and
/// all counted). Returns the run and how many pairs the kernel forwards.
fn ours(t: &Topology, a: &Args, xdp: bool, srtp: bool) -> (Run, u64) {
    let (far, sink) = far_side(t);
    let caller: SocketAddr =
        SocketAddr::from((CALLER.parse::<std::net::Ipv4Addr>().unwrap(), CALLER_PORT));
    let far_addr = far.local_addr().unwrap();
    let processes = if xdp {
        a.flows.div_ceil(CALLS_PER_PROCESS)
    } else {
        1
    };
    let pins = (processes > 1).then(PinDir::mount);
    let per = a.flows.div_ceil(processes);
    let mut pairs: Vec<[u16; 2]> = Vec::with_capacity(a.flows);
    let mut children = Children(Vec::new());
    let mut relay = Vec::new();
    if let Some(pins) = &pins {
        let exe = std::env::current_exe().expect("own executable");
        for k in 1..processes {
            let flows = per.min(a.flows - k * per);
            let mut c = t
                .exec(1)
                .arg(&exe)
                .arg("--engine-child")
                .arg(pins.0.join("p"))
                .args([
                    flows.to_string(),
                    (1_000_000 * k as u64).to_string(),
                    k.to_string(),
                    processes.to_string(),
                    caller.to_string(),
                    far_addr.to_string(),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("engine process");
            let out = c.stdout.take().expect("child stdout");
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
                let line = line.expect("child output");
                if line == "ready" {
                    break;
                }
                let mut it = line.split(' ').map(|p| p.parse::<u16>().expect("port"));
                pairs.push([it.next().expect("port"), it.next().expect("port")]);
            }
            relay.extend(threads_of(c.id(), "media-0"));
            children.0.push(c);
        }
    }
    let pin_dir = pins.as_ref().map(|p| p.0.join("p"));
    let (engine, path) = t.run(1, move || {
        pin(0);
        let path = xdp.then(|| {
            let path = match &pin_dir {
                // Attached last: its program is the one that runs.
                Some(dir) => pinned_path(dir),
                None => {
                    let mut o = XdpOffload::load_detached().expect("load XDP");
                    for dev in ["gc", "gf"] {
                        o.attach(dev, XdpMode::Native).expect("attach");
                    }
                    XdpPath::new(o, Some(GW_C.parse().unwrap()), false)
                }
            };
            Arc::new(path)
        });
        (start_engine(path.clone(), port_range(0, processes)), path)
    });
    let prog_id = path.as_ref().and_then(|p| p.program_id());
    relay.extend(own_threads("media-0"));
    if xdp {
        relay.extend(napi_on_cpu0(t, "gc"));
    }
    let e = engine.clone();
    let own = a.flows - pairs.len();
    pairs.extend(t.run(1, move || open_relays(&e, own, 10, caller, far_addr, srtp)));
    // Both sides speak once so every pair latches (and, with XDP, moves
    // to the kernel); the generator's first packets latch the caller side.
    for p in &pairs {
        far.send_to(&rtp(0, 0xfa), gw_c(p[1])).expect("latch far");
    }
    let targets: Vec<SocketAddrV4> = pairs.iter().map(|p| gw_c(p[0])).collect();
    // Pairs in the kernel: two rules each, whichever process made them.
    let in_kernel = || path.as_ref().map_or(0, |p| p.rules().len() as u64 / 2);
    if xdp {
        // Latch the caller side too, and wait (bounded) until every pair
        // runs in the kernel before measuring.
        let caller_sock = t.run(0, || {
            UdpSocket::bind((CALLER, CALLER_PORT)).expect("caller")
        });
        let until = Instant::now() + Duration::from_secs(90);
        let mut seq = 1;
        while (in_kernel() as usize) < a.flows && Instant::now() < until {
            for (i, p) in pairs.iter().enumerate() {
                let _ = caller_sock.send_to(&rtp(seq, i as u32 + 1), gw_c(p[0]));
                let _ = far.send_to(&rtp(seq, 0xfa), gw_c(p[1]));
            }
            seq += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let before = prog_stats(prog_id);
    let mut run = measure(t, targets, a, srtp, &|| sink.delivered(), &relay);
    run.prog_ns = per_run(before, prog_stats(prog_id));
    let offloaded = in_kernel();
    veth_drops(t);
    drop(far);
    drop(engine);
    drop(children);
    drop(pins);
    (run, offloaded)
}

// ---- rtpengine (ng protocol, bencode over UDP) --------------------------

fn bencode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    for (k, v) in pairs {
        out.extend(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
        out.extend(v.as_bytes());
    }
    out.push(b'e');
    out
}

/// The value of a string key in a flat bencoded dict reply.
fn bvalue(reply: &[u8], key: &str) -> Option<String> {
    let pat = format!("{}:{key}", key.len());
    let s = String::from_utf8_lossy(reply);
    let at = s.find(&pat)? + pat.len();
    let rest = &s[at..];
    let colon = rest.find(':')?;
    let len: usize = rest[..colon].parse().ok()?;
    rest.get(colon + 1..colon + 1 + len).map(str::to_string)
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// The caller's SDES offer: RTP/SAVP keyed with [`SRTP_KEY`].
fn srtp_sdp(ip: &str, port: u16) -> String {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(SRTP_KEY);
    sdp(ip, port).replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:1 {} inline:{key}\r\n", SRTP_SUITE.name())
}

fn sdp_port(s: &str) -> Option<u16> {
    s.lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Rtpengine(std::process::Child);

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rtpengine(t: &Topology, a: &Args, srtp: bool) -> Run {
    let (far, sink) = far_side(t);
    let far_port = far.local_addr().unwrap().port();
    let log = std::fs::File::create("/tmp/relay-bench-rtpengine.log").expect("log");
    let daemon = Rtpengine(
        std::process::Command::new("taskset")
            .args(["-c", "0", "ip", "netns", "exec", &t.ns[1], "rtpengine"])
            .args([
                "--foreground",
                "--log-stderr",
                "--log-level=2",
                "--table=-1",
            ])
            .args(["--interface", GW_C, "--listen-ng", "127.0.0.1:22222"])
            .args([
                "--port-min",
                "20000",
                "--port-max",
                "65000",
                "--num-threads",
                "1",
            ])
            .args(["--pidfile", "/tmp/relay-bench-rtpengine.pid"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run rtpengine (apt package rtpengine-daemon)"),
    );
    let ng = t.run(1, || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    });
    let call = |cookie: usize, msg: Vec<u8>| -> Vec<u8> {
        let mut m = format!("c{cookie} ").into_bytes();
        m.extend(msg);
        for _ in 0..20 {
            ng.send_to(&m, "127.0.0.1:22222").unwrap();
            let mut buf = vec![0u8; 65536];
            if let Ok(n) = ng.recv(&mut buf) {
                buf.truncate(n);
                return buf;
            }
        }
        panic!("rtpengine did not answer (see /tmp/relay-bench-rtpengine.log)");
    };
    let mut targets = Vec::new();
    for i in 0..a.flows {
        let call_id = format!("bench-{i}");
        // SRTP: the caller offers SDES keys, the far side is offered
        // plain RTP, so rtpengine decrypts what the caller sends.
        let offer = if srtp {
            call(
                2 * i,
                bencode(&[
                    ("call-id", &call_id),
                    ("command", "offer"),
                    ("from-tag", "caller"),
                    ("sdp", &srtp_sdp(CALLER, CALLER_PORT)),
                    ("transport-protocol", "RTP/AVP"),
                ]),
            )
        } else {
            call(
                2 * i,
                bencode(&[
                    ("command", "offer"),
                    ("call-id", &call_id),
                    ("from-tag", "caller"),
                    ("sdp", &sdp(CALLER, CALLER_PORT)),
                ]),
            )
        };
        if srtp && i == 0 {
            let o = bvalue(&offer, "sdp").unwrap_or_default();
            assert!(
                o.contains("RTP/AVP") && !o.contains("a=crypto"),
                "rtpengine offers the far side plain RTP: {o}"
            );
        }
        let to_far = bvalue(&offer, "sdp")
            .and_then(|s| sdp_port(&s))
            .expect("offer reply");
        let answer = call(
            2 * i + 1,
            bencode(&[
                ("command", "answer"),
                ("call-id", &call_id),
                ("from-tag", "caller"),
                ("to-tag", "far"),
                ("sdp", &sdp(FAR, far_port)),
            ]),
        );
        let to_caller_sdp = bvalue(&answer, "sdp").unwrap_or_default();
        if srtp && i == 0 {
            assert!(
                to_caller_sdp.contains("RTP/SAVP") && to_caller_sdp.contains("a=crypto"),
                "rtpengine answers the caller with SDES: {to_caller_sdp}"
            );
        }
        let to_caller = sdp_port(&to_caller_sdp).expect("answer reply");
        far.send_to(&rtp(0, 0xfa), gw_c(to_far)).expect("latch far");
        targets.push(gw_c(to_caller));
    }
    let stat = vec![std::path::PathBuf::from(format!(
        "/proc/{}/stat",
        daemon.0.id()
    ))];
    measure(t, targets, a, srtp, &|| sink.delivered(), &stat)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--engine-child") {
        return engine_child(&argv[1..]);
    }
    let a = args();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "relay-bench needs root (netns, XDP)"
    );
    // Four sockets per relayed call (RTP and RTCP, both legs): raise the
    // descriptor limit where the host allows it.
    let lim = libc::rlimit {
        rlim_cur: 200_000,
        rlim_max: 200_000,
    };
    // SAFETY: setrlimit reads one rlimit value we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        eprintln!(
            "could not raise RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    // Kernel accounting of BPF program run time (restored at the end).
    let stats_was =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let results = Mutex::new(Vec::<(String, Run, String)>::new());
    for m in &a.modes {
        let t = Topology::new("b");
        // Frames redirected into the caller's veth need a program there.
        let _pass = t.run(0, || XdpOffload::load("c0", XdpMode::Native).expect("c0"));
        if matches!(
            m.as_str(),
            "userspace" | "rtpengine" | "userspace-srtp" | "rtpengine-srtp"
        ) {
            // The relays' own sends toward the far host: checksums left
            // to the device, as a NIC does (the topology turns it off for
            // frames the XDP program must see whole; the far sink drops
            // them either way).
            let _ = t.exec(1).args(["ethtool", "-K", "gf", "tx", "on"]).output();
            // The kernel's receive path for the relay's sockets runs on
            // the relay's core (receive packet steering), as a NIC's
            // interrupt would put it, not on the generator's.
            let _ = t
                .exec(1)
                .args([
                    "sh",
                    "-c",
                    "echo 1 > /sys/class/net/gc/queues/rx-0/rps_cpus",
                ])
                .output();
        }
        let (run, note) = match m.as_str() {
            "ceiling" => (ceiling(&t, &a), String::new()),
            "xdp" => {
                let (r, off) = ours(&t, &a, true, false);
                (r, format!("{off} of {} pairs in the kernel", a.flows))
            }
            "userspace" => (ours(&t, &a, false, false).0, String::new()),
            "rtpengine" => (rtpengine(&t, &a, false), String::new()),
            "userspace-srtp" => (ours(&t, &a, false, true).0, String::new()),
            "rtpengine-srtp" => (rtpengine(&t, &a, true), String::new()),
            o => panic!("unknown mode {o}"),
        };
        eprintln!(
            "{m:>10}: sent {} delivered {} ({:.0} pps, loss {:.3} %), machine busy {:.1} %, {:.0} ns/packet, relay {:.0} ns/packet {note}",
            run.sent,
            run.delivered,
            run.pps(),
            100.0 * run.loss(),
            100.0 * run.cpu_share(),
            run.ns_per_packet(),
            run.relay_ns_per_packet()
        );
        results.lock().unwrap().push((m.clone(), run, note));
    }
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if stats_was.trim() == "1" { "1" } else { "0" },
    );
    let r = results.into_inner().unwrap();
    let get = |m: &str| r.iter().find(|(n, _, _)| n == m).map(|(_, run, _)| run);
    println!(
        "flows {}, offered {}, {} s per mode",
        a.flows,
        a.rate.map_or("max".into(), |r| format!("{r} pps")),
        a.secs
    );
    println!(
        "| mode | delivered pps | loss | machine busy | machine CPU ns/packet | above ceiling | relay CPU ns/packet | XDP program ns/run |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let base = get("ceiling").map(Run::ns_per_packet);
    for (m, run, note) in &r {
        let above = base.map_or("-".into(), |b| format!("{:.0}", run.ns_per_packet() - b));
        println!(
            "| {m} {note} | {:.0} | {:.3} % | {:.1} % | {:.0} | {above} | {:.0} | {} |",
            run.pps(),
            100.0 * run.loss(),
            100.0 * run.cpu_share(),
            run.ns_per_packet(),
            run.relay_ns_per_packet(),
            run.prog_ns.map_or("-".into(), |p| format!("{p:.0}"))
        );
    }
    if let (Some(x), Some(e)) = (get("xdp"), get("rtpengine"))
        && e.delivered > 0
    {
        println!(
            "relay CPU per packet, rtpengine / our XDP path: {:.1}x",
            e.relay_ns_per_packet() / x.relay_ns_per_packet().max(1.0)
        );
    }
    if let (Some(u), Some(e)) = (get("userspace"), get("rtpengine"))
        && e.delivered > 0
        && u.delivered > 0
    {
        println!(
            "relay CPU per packet, rtpengine / our userspace relay: {:.2}x",
            e.relay_ns_per_packet() / u.relay_ns_per_packet().max(1.0)
        );
    }
    if let (Some(u), Some(e)) = (get("userspace-srtp"), get("rtpengine-srtp"))
        && e.delivered > 0
        && u.delivered > 0
    {
        println!(
            "SRTP to RTP, relay CPU per packet, rtpengine / our userspace relay: {:.2}x",
            e.relay_ns_per_packet() / u.relay_ns_per_packet().max(1.0)
        );
    }
    if let (Some(s), Some(p)) = (get("userspace-srtp"), get("userspace"))
        && s.delivered > 0
        && p.delivered > 0
    {
        println!(
            "our userspace relay, SRTP to RTP / plain: {:.2}x CPU per packet",
            s.relay_ns_per_packet() / p.relay_ns_per_packet().max(1.0)
        );
    }
    if let (Some(c), Some(x)) = (get("ceiling"), get("xdp")) {
        println!(
            "our XDP path / ceiling packets per second: {:.1} %",
            100.0 * x.pps() / c.pps()
        );
    }
}
