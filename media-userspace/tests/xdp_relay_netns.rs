//! The relay of a forwarded call in network namespaces this test creates:
//! a caller host and a far host, each behind its own veth pair, and the
//! gateway between them running the media engine. With the XDP program
//! attached in driver mode on the gateway's veths, the pair's RTP must move
//! to the kernel once both sides latched, arrive complete and rewritten
//! (our address and port as the source), return to userspace when a peer
//! moves and come back once it latched again. Without XDP the same
//! topology is relayed in userspace.
//!
//! Needs root (netns, veth, XDP) and the program built in: without them
//! the tests FAIL loudly; `GATEWAY_TEST_SKIP_XDP=1` skips them instead,
//! which `GATEWAY_REQUIRE_XDP=1` (CI) overrides. Traffic stays inside the
//! namespaces (198.18.0.0/15, the benchmark range) and every loop is
//! bounded.

use media_userspace::codec::Codec;
use media_userspace::control::{LegMedia, MediaCommand, MediaEvent};
use media_userspace::engine::{EngineConfig, MediaEngine, MediaStats};
use media_userspace::offload::XdpPath;
use media_userspace::testnet::Topology;
use media_userspace::xdp::{Attached, XdpMode, XdpOffload, build_info, program_bytes};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use media_userspace::testnet::{CALLER, FAR, GW_C};

fn env_is_set(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// `true` when the test may run; panics (or skips, see the module doc).
fn available(need_program: bool) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_string())
    } else if need_program && program_bytes().is_none() {
        Some(format!("XDP program not built in ({})", build_info()))
    } else {
        None
    };
    let Some(why) = why else { return true };
    if !env_is_set("GATEWAY_REQUIRE_XDP") && env_is_set("GATEWAY_TEST_SKIP_XDP") {
        eprintln!("SKIPPED (GATEWAY_TEST_SKIP_XDP=1): {why}");
        return false;
    }
    panic!(
        "\n*** XDP relay netns test cannot run: {why}\n*** scripts/setup.sh test; run as root\n"
    );
}

fn media(remote: SocketAddr) -> LegMedia {
    LegMedia {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        ptime_ms: 20,
        remote: Some(remote),
        send: true,
        srtp: None,
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

struct Gateway {
    engine: MediaEngine,
    ports: [u16; 2],
    /// Keeps the program attached on the hosts' veths.
    _pass: Vec<XdpOffload>,
}

/// Starts the engine in the gateway namespace (with the XDP path when
/// `xdp`) and opens a relay pair between the two peers.
fn gateway(t: &Topology, xdp: bool, caller: SocketAddr, far: SocketAddr) -> Gateway {
    gateway_pinned(t, xdp, None, caller, far)
}

/// [`gateway`] with its offload pinned in `pin` (a bpffs directory).
fn gateway_pinned(
    t: &Topology,
    xdp: bool,
    pin: Option<PathBuf>,
    caller: SocketAddr,
    far: SocketAddr,
) -> Gateway {
    let mut pass = Vec::new();
    if xdp {
        // Frames redirected into a veth are received by its peer's XDP
        // (driver mode): an XDP_PASS program there (ours, without rules).
        for (i, dev) in [(0, "c0"), (2, "f0")] {
            pass.push(t.run(i, move || {
                XdpOffload::load(dev, XdpMode::Native).expect("XDP_PASS program on the host veth")
            }));
        }
    }
    let engine = t.run(1, move || {
        let path = xdp.then(|| Arc::new(relay_offload(pin.as_deref())));
        relay_engine(path)
    });
    let e = engine.clone();
    let opened = t.run(1, move || {
        e.command(MediaCommand::OpenRelay {
            legs: [1, 2],
            media: [media(caller), media(far)],
            timeout: Duration::from_secs(30),
        })
    });
    let Some(MediaEvent::RelayOpened { locals, .. }) = opened else {
        panic!("relay did not open: {opened:?}");
    };
    Gateway {
        engine,
        ports: [locals[0].port(), locals[1].port()],
        _pass: pass,
    }
}

/// The gateway's media engine (run it inside the gateway namespace), with
/// the fast path when given.
fn relay_engine(xdp: Option<Arc<XdpPath>>) -> MediaEngine {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    MediaEngine::start(
        EngineConfig {
            bind_ip: GW_C.parse().unwrap(),
            port_min: 30_000,
            port_max: 30_099,
            workers: 1,
            prefer_io_uring: false,
            xdp,
            connect_guard: None,
        },
        events,
    )
    .expect("media engine")
}

/// The gateway's XDP program on both its veths in driver mode; with `pin`,
/// loaded and attached through pins there (taking over what a previous
/// run left).
fn relay_offload(pin: Option<&Path>) -> XdpPath {
    let mut o = match pin {
        Some(dir) => XdpOffload::load_pinned(dir).expect("load the pinned XDP program"),
        None => XdpOffload::load_detached().expect("load XDP program"),
    };
    for dev in ["gc", "gf"] {
        let how = match pin {
            Some(dir) => o.attach_pinned(dev, XdpMode::Native, dir),
            None => o.attach(dev, XdpMode::Native),
        }
        .expect("attach in driver mode");
        assert_eq!(how, Attached::Native, "{dev}: driver mode");
    }
    XdpPath::new(o, Some(GW_C.parse().unwrap()), false)
}

/// Sends `n` packets each way, 2 ms apart, and receives them; returns
/// (caller received, far received). Checks the sources: our address and
/// the other leg's port, as symmetric RTP requires.
fn exchange(
    caller: &UdpSocket,
    far: &UdpSocket,
    ports: [u16; 2],
    first_seq: u16,
    n: u16,
) -> (usize, usize) {
    exchange_spoofed(caller, far, None, ports, first_seq, n)
}

/// [`exchange`], with `spoofer` sending its own in-sequence stream to both
/// legs alongside: the sides must still get only each other's packets.
fn exchange_spoofed(
    caller: &UdpSocket,
    far: &UdpSocket,
    spoofer: Option<&UdpSocket>,
    ports: [u16; 2],
    first_seq: u16,
    n: u16,
) -> (usize, usize) {
    let to_a: SocketAddr = format!("{GW_C}:{}", ports[0]).parse().unwrap();
    let to_b: SocketAddr = format!("{GW_C}:{}", ports[1]).parse().unwrap();
    for s in [caller, far] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let (mut got_a, mut got_b) = (0, 0);
    let mut buf = [0u8; 1500];
    for seq in first_seq..first_seq + n {
        caller.send_to(&rtp(seq, 0xa), to_a).unwrap();
        far.send_to(&rtp(seq, 0xb), to_b).unwrap();
        if let Some(s) = spoofer {
            s.send_to(&rtp(seq.wrapping_add(7000), 0xbad), to_a)
                .unwrap();
            s.send_to(&rtp(seq.wrapping_add(9000), 0xbad), to_b)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
        while let Ok((len, from)) = far.recv_from(&mut buf) {
            assert_eq!(from, to_b, "far side sees our leg B address");
            assert_eq!(&buf[8..12], &0xau32.to_be_bytes(), "the caller's stream");
            assert_eq!(len, 172);
            got_b += 1;
            far.set_nonblocking(true).unwrap();
        }
        far.set_nonblocking(false).unwrap();
        while let Ok((_, from)) = caller.recv_from(&mut buf) {
            assert_eq!(from, to_a, "caller sees our leg A address");
            assert_eq!(&buf[8..12], &0xbu32.to_be_bytes(), "the far side's stream");
            got_a += 1;
            caller.set_nonblocking(true).unwrap();
        }
        caller.set_nonblocking(false).unwrap();
    }
    // Stragglers.
    let deadline = Instant::now() + Duration::from_millis(500);
    for (s, got) in [(caller, &mut got_a), (far, &mut got_b)] {
        while Instant::now() < deadline && s.recv_from(&mut buf).is_ok() {
            *got += 1;
        }
    }
    (got_a, got_b)
}

fn stat(s: &MediaStats, f: impl Fn(&MediaStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    f(s).load(Ordering::Relaxed)
}

#[test]
fn forwarded_rtp_moves_to_the_kernel_and_back_when_a_peer_moves() {
    if !available(true) {
        return;
    }
    let t = Topology::new("x");
    let caller = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let far = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    let gw = gateway(
        &t,
        true,
        caller.local_addr().unwrap(),
        far.local_addr().unwrap(),
    );
    let stats = gw.engine.stats().clone();

    let (a, b) = exchange(&caller, &far, gw.ports, 0, 400);
    assert_eq!((a, b), (400, 400), "nothing lost either way");
    assert_eq!(
        stat(&stats, |s| &s.xdp_offloads),
        1,
        "offloaded once both sides latched"
    );
    assert_eq!(stat(&stats, |s| &s.xdp_pairs_active), 1);
    assert_eq!(stat(&stats, |s| &s.xdp_failures), 0);

    // The far phone moves to another port (NAT rebinding) after a pause:
    // the kernel passes its packets up, userspace re-latches, the pair
    // returns to userspace and, once both sides are latched, to the kernel.
    std::thread::sleep(Duration::from_millis(600));
    let far2 = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    let (a, b) = exchange(&caller, &far2, gw.ports, 400, 600);
    // A new port is not the SDP address: it is latched once it sent a run
    // of LATCH_PACKETS in-sequence packets (a spoofer cannot take the call
    // with one). The run's first packets are not relayed, and the caller's
    // packets sent until the move is latched go to the old port, as they
    // would in userspace (a move is known only once the peer earned it).
    let run = usize::from(media_userspace::latch::LATCH_PACKETS);
    far.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut to_old = 0;
    while far.recv_from(&mut buf).is_ok() {
        to_old += 1;
    }
    assert_eq!(
        (a, b, to_old),
        (600 - (run - 1), 600 - run, run),
        "only the latching run is not relayed across the move"
    );
    assert_eq!(
        stat(&stats, |s| &s.xdp_returns),
        1,
        "back to userspace once"
    );
    assert_eq!(stat(&stats, |s| &s.xdp_offloads), 2, "and offloaded again");

    let e = gw.engine.clone();
    t.run(1, move || e.command(MediaCommand::Close { leg: 1 }));
    let until = Instant::now() + Duration::from_secs(3);
    while stat(&stats, |s| &s.xdp_pairs_active) != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        stat(&stats, |s| &s.xdp_pairs_active),
        0,
        "rules removed at close"
    );
    let kernel = stat(&stats, |s| &s.xdp_packets);
    eprintln!(
        "XDP forwarded {kernel} of 2000 packets; userspace relayed the rest (latching, the move)"
    );
    assert!(
        kernel >= 1900,
        "all but the latching and moving packets went through the kernel: {kernel}"
    );
}

#[test]
fn a_spoofed_stream_gets_nothing_from_an_offloaded_pair() {
    if !available(true) {
        return;
    }
    let t = Topology::new("s");
    let caller = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let far = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    // On the caller's host, as a NAT-mate or a spoofer of its address.
    let spoofer = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let gw = gateway(
        &t,
        true,
        caller.local_addr().unwrap(),
        far.local_addr().unwrap(),
    );
    let stats = gw.engine.stats().clone();
    assert_eq!(exchange(&caller, &far, gw.ports, 0, 200), (200, 200));
    assert_eq!(stat(&stats, |s| &s.xdp_offloads), 1);
    // While both peers talk, a perfect stream of the spoofer's own at both
    // legs: `exchange` asserts every packet each side gets is the other's.
    let (a, b) = exchange_spoofed(&caller, &far, Some(&spoofer), gw.ports, 200, 400);
    assert_eq!((a, b), (400, 400), "the call goes on untouched");
    spoofer
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1500];
    assert!(
        spoofer.recv_from(&mut buf).is_err(),
        "the spoofer got audio"
    );
    assert_eq!(stat(&stats, |s| &s.xdp_returns), 0, "never left the kernel");
    assert!(
        stat(&stats, |s| &s.rejected_source) >= 700,
        "the kernel passed the spoofed packets up and userspace refused them"
    );
}

#[test]
fn forwarded_rtp_is_relayed_in_userspace_without_xdp() {
    if !available(false) {
        return;
    }
    let t = Topology::new("u");
    let caller = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let far = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    let gw = gateway(
        &t,
        false,
        caller.local_addr().unwrap(),
        far.local_addr().unwrap(),
    );
    let (a, b) = exchange(&caller, &far, gw.ports, 0, 300);
    assert_eq!((a, b), (300, 300));
    let stats = gw.engine.stats();
    assert_eq!(stat(stats, |s| &s.xdp_offloads), 0);
}

/// A bpffs mounted at a fresh directory for the test (the host's
/// /sys/fs/bpf may be absent); unmounted on drop.
struct BpfFs(PathBuf);

impl BpfFs {
    fn mount(tag: &str) -> BpfFs {
        let dir = std::env::temp_dir().join(format!("gw-bpffs-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        media_userspace::testnet::sh(&["mount", "-t", "bpf", "bpf", dir.to_str().unwrap()]);
        BpfFs(dir)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = XdpOffload::unpin(&self.0);
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn offloaded_media_keeps_flowing_while_the_relay_restarts() {
    if !available(true) {
        return;
    }
    let bpffs = BpfFs::mount("restart");
    let pin = bpffs.0.join("gateway");
    let t = Topology::new("r");
    let caller = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let far = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    let gw = gateway_pinned(
        &t,
        true,
        Some(pin.clone()),
        caller.local_addr().unwrap(),
        far.local_addr().unwrap(),
    );
    let (a, b) = exchange(&caller, &far, gw.ports, 0, 300);
    assert_eq!((a, b), (300, 300));
    // A second call, which ends while the daemon is away: its rules are
    // orphans the next run removes.
    let caller2 = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let far2 = t.run(2, || UdpSocket::bind(format!("{FAR}:0")).unwrap());
    let e = gw.engine.clone();
    let (c2, f2) = (caller2.local_addr().unwrap(), far2.local_addr().unwrap());
    let opened = t.run(1, move || {
        e.command(MediaCommand::OpenRelay {
            legs: [3, 4],
            media: [media(c2), media(f2)],
            timeout: Duration::from_secs(30),
        })
    });
    let Some(MediaEvent::RelayOpened { locals, .. }) = opened else {
        panic!("second relay did not open: {opened:?}");
    };
    let ports2 = [locals[0].port(), locals[1].port()];
    assert_eq!(exchange(&caller2, &far2, ports2, 0, 100), (100, 100));
    assert_eq!(
        stat(gw.engine.stats(), |s| &s.xdp_pairs_active),
        2,
        "both offloaded"
    );

    // The daemon goes away without closing its calls: its relay tasks and
    // sockets are gone once the legs' ports can be bound again.
    let ports = gw.ports;
    let Gateway { engine, _pass, .. } = gw;
    drop(engine);
    let freed = t.run(1, move || {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if UdpSocket::bind(format!("{GW_C}:{}", ports[0])).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    assert!(freed, "the relay's sockets closed");
    // Nobody in userspace: the kernel alone keeps the call's media going.
    let (a, b) = exchange(&caller, &far, ports, 300, 300);
    assert_eq!((a, b), (300, 300), "0 lost while no relay runs");

    // The next run takes the pinned maps and links over: the program is
    // replaced in place, the rules are there, media still flows, and the
    // engine keeps the legs' ports from new calls.
    let p = pin.clone();
    let (engine, path) = t.run(1, move || {
        let path = Arc::new(relay_offload(Some(&p)));
        (relay_engine(Some(path.clone())), path)
    });
    let rules = path.rules();
    assert_eq!(rules.len(), 4, "one rule per direction survived: {rules:?}");
    assert_eq!(
        stat(engine.stats(), |s| &s.xdp_pairs_active),
        0,
        "inherited rules are nobody's until adopted"
    );
    let (a, b) = exchange(&caller, &far, ports, 600, 100);
    assert_eq!((a, b), (100, 100), "0 lost after the restart");

    // The restored call adopts its relay: it starts offloaded on the
    // same rules, so the kernel never stops forwarding.
    let e = engine.clone();
    let (c, f) = (caller.local_addr().unwrap(), far.local_addr().unwrap());
    let adopted = t.run(1, move || {
        e.command(MediaCommand::AdoptRelay {
            legs: [11, 12],
            media: [media(c), media(f)],
            ports,
            timeout: Duration::from_secs(30),
        })
    });
    assert!(
        matches!(adopted, Some(MediaEvent::RelayOpened { locals, .. }) if locals.map(|l| l.port()) == ports),
        "{adopted:?}"
    );
    // The other call's rules are orphans: removed at once.
    assert_eq!(engine.release_inherited(), 2, "the ended call's two legs");
    let keys: Vec<u16> = path
        .rules()
        .iter()
        .map(|(k, _)| u16::from_be(k.local_port))
        .collect();
    assert!(
        keys.len() == 2 && keys.iter().all(|p| ports.contains(p)),
        "only the adopted pair's rules are left: {keys:?}"
    );
    // The worker starts the adopted pair on its next mailbox tick.
    let until = Instant::now() + Duration::from_secs(2);
    while stat(engine.stats(), |s| &s.xdp_pairs_active) != 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stat(engine.stats(), |s| &s.xdp_pairs_active), 1);
    assert_eq!(stat(engine.stats(), |s| &s.legs_active), 2);
    let (a, b) = exchange(&caller, &far, ports, 700, 200);
    assert_eq!((a, b), (200, 200), "0 lost once adopted");
    let forwarded: u64 = path
        .rules()
        .iter()
        .map(|(k, _)| path.leg_counters(k).map_or(0, |c| c.packets))
        .sum();
    assert!(
        forwarded >= 2 * 900 - 20,
        "the kernel forwarded all but the latching packets, before, during and after: {forwarded}"
    );
    assert_eq!(
        stat(engine.stats(), |s| &s.xdp_offloads),
        0,
        "adopted as offloaded, not offloaded afresh"
    );
    let opened = {
        let e = engine.clone();
        t.run(1, move || {
            e.command(MediaCommand::OpenRelay {
                legs: [5, 6],
                media: [media(c), media(f)],
                timeout: Duration::from_secs(30),
            })
        })
    };
    let Some(MediaEvent::RelayOpened { locals, .. }) = opened else {
        panic!("{opened:?}");
    };
    assert!(
        !locals.iter().any(|l| ports.contains(&l.port())),
        "a new call does not get an adopted leg's port: {locals:?} vs {ports:?}"
    );
    // The adopted relay owns its rules: closing the call removes them.
    let e = engine.clone();
    t.run(1, move || e.command(MediaCommand::Close { leg: 11 }));
    // The relay removes the rules, takes in their last counters, then
    // counts the pair out: the close is over when both are seen.
    let until = Instant::now() + Duration::from_secs(3);
    while (!path.rules().is_empty() || stat(engine.stats(), |s| &s.xdp_pairs_active) != 0)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        path.rules().is_empty(),
        "closing the adopted call removed its rules"
    );
    assert_eq!(stat(engine.stats(), |s| &s.xdp_pairs_active), 0);
    drop(engine);
    drop(path);
    drop(_pass);
}
