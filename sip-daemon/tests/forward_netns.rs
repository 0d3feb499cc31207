//! A forwarded call across real routing: the daemon runs in a gateway
//! network namespace between a caller host and a far host (veth pairs the
//! test creates, 198.18.0.0/15), two baresip phones talk through it, and
//! each must hear the other. With `media.xdp = "on"` the relayed RTP must
//! go through the XDP program in driver mode; with "off", through the
//! userspace relay.
//!
//! Needs root, iproute2, ethtool, baresip and the XDP program built in;
//! without them the test FAILS (GATEWAY_TEST_SKIP_XDP=1 skips it, which
//! GATEWAY_REQUIRE_XDP=1 overrides).

mod common;

use common::baresip::{Callee, baresip_call_from, tone, tone_in_frames};
use common::{Caller, Daemon, Opts, header};
use media_userspace::testnet::{CALLER, FAR, GW_C, Topology};
use media_userspace::xdp::{XdpMode, XdpOffload};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn available() -> bool {
    common::xdp_test_available("forwarded-call netns test")
}

/// The daemon in the gateway namespace: callers' trunk on the caller side,
/// `number` forwarded through the far trunk to port `far_port` of the far
/// host; `media.xdp = xdp`, pinned in `pin` (empty: not pinned).
fn gateway_daemon(t: &Topology, number: &str, far_port: u16, xdp: &str, pin: &str) -> Daemon {
    Daemon::start_opts(Opts {
        netns: Some(&t.ns[1]),
        ip: Some(GW_C),
        listen: Some(r#"["udp:{ip}:{port}"]"#),
        media_extra: &format!("xdp = \"{xdp}\"\nxdp_interfaces = [\"gc\", \"gf\"]\n"),
        xdp_pin_dir: pin,
        extra: &format!(
            r#"
[[trunks]]
name = "callers"
source_cidrs = ["198.18.0.0/24"]

[[trunks]]
name = "far"
source_cidrs = ["198.18.1.0/24"]
outbound_address = "{FAR}:{far_port}"
transport = "udp"

[[numbers]]
pattern = "{number}"
account = "acct"
route = "forward"
target = "sip:{number}@far.test"
trunk = "far"
"#
        ),
        ..Opts::default()
    })
}

/// Places one call caller → +15557000004 → far phone through the daemon
/// in the gateway namespace; checks both directions of audio. Returns the
/// daemon (for its metrics).
fn forwarded_call(t: &Topology, xdp: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let callee = Callee::start_in(
        Some(&t.ns[2]),
        FAR,
        tmp.path().join("callee"),
        "+15557000004",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 6000, 8000.0),
        7,
    );
    // (Not pinned.)
    let d = gateway_daemon(t, "+15557000004", callee.port, xdp, "");
    let (rate, heard) = baresip_call_from(
        Some(&t.ns[0]),
        CALLER,
        &d,
        "+15557000004",
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 3000, 8000.0),
        4,
    );
    let callee_log = callee.log();
    let (rate_b, heard_b) = callee.finish();
    assert_eq!((rate, rate_b), (8000, 8000));
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "xdp={xdp}: the caller heard the far phone's 1 kHz: {frames} frames, share {share:.2}\n{callee_log}\n{}",
        d.logs()
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "xdp={xdp}: the far phone heard the caller's 440 Hz: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    d.wait_cdr_cause("caller_hangup");
    d
}

#[test]
fn forwarded_call_media_goes_through_xdp_in_driver_mode() {
    if !available() {
        return;
    }
    let t = Topology::new("s");
    // Frames redirected into a veth are received by its peer's XDP: an
    // XDP_PASS program on the hosts' ends (ours, without rules).
    let _pass: Vec<XdpOffload> = [(0, "c0"), (2, "f0")]
        .into_iter()
        .map(|(i, dev)| {
            t.run(i, move || {
                XdpOffload::load(dev, XdpMode::Native).expect("XDP_PASS")
            })
        })
        .collect();
    let d = forwarded_call(&t, "on");
    assert_eq!(d.metric("gateway_xdp_attached"), 1.0, "{}", d.logs());
    assert!(d.logs().contains("XDP fast path attached"), "{}", d.logs());
    let offloads = d.metric("gateway_xdp_offloads_total");
    let kernel = d.metric("gateway_xdp_forwarded_packets_total");
    // The relay's totals count what the kernel forwarded for it too.
    let relayed = d.metric("gateway_rtp_tx_packets_total");
    eprintln!(
        "XDP: {offloads} offload(s), {kernel} of {relayed} relayed RTP packets forwarded in the kernel"
    );
    assert!(offloads >= 1.0, "the call was offloaded");
    assert!(
        kernel >= 200.0 && kernel >= 0.9 * relayed,
        "the call's RTP went through the kernel: {kernel} of {relayed}"
    );
}

#[test]
fn forwarded_call_media_goes_through_userspace_with_xdp_off() {
    if !available() {
        return;
    }
    let t = Topology::new("o");
    let d = forwarded_call(&t, "off");
    assert_eq!(d.metric("gateway_xdp_attached"), 0.0);
    assert_eq!(d.metric("gateway_xdp_forwarded_packets_total"), 0.0);
    assert!(d.metric("gateway_rtp_tx_packets_total") >= 300.0);
}

/// A bpffs the test mounts for the daemon's pins (none is mounted at
/// /sys/fs/bpf here); unmounted, pins and all, when dropped.
struct BpfFs(std::path::PathBuf);

impl BpfFs {
    fn mount(tag: &str) -> BpfFs {
        let dir = std::env::temp_dir().join(format!("gw-bpffs-{}-{tag}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        media_userspace::testnet::sh(&["mount", "-t", "bpf", "bpf", dir.to_str().unwrap()]);
        BpfFs(dir)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The far party as raw SIP on UDP in the far namespace: answers one
/// INVITE 200 with its RTP address, then answers the BYE that ends the
/// call (which it returns, with the INVITE it answered).
struct FarParty {
    port: u16,
    rtp: UdpSocket,
    invite: Arc<std::sync::Mutex<Option<String>>>,
    done: std::thread::JoinHandle<(String, Option<String>)>,
}

fn reply(req: &str, status: &str, extra: &str, body: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let v = header(req, h).unwrap_or_default();
        if h == "To" && !v.contains("tag=") {
            r.push_str(&format!("To: {v};tag=far-party\r\n"));
        } else {
            r.push_str(&format!("{h}: {v}\r\n"));
        }
    }
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!("{r}{extra}{ct}Content-Length: {}\r\n\r\n{body}", body.len())
}

impl FarParty {
    fn start(t: &Topology, within: Duration) -> FarParty {
        let (sip, rtp) = t.run(2, || {
            (
                UdpSocket::bind(format!("{FAR}:0")).unwrap(),
                UdpSocket::bind(format!("{FAR}:0")).unwrap(),
            )
        });
        let port = sip.local_addr().unwrap().port();
        let rtp_port = rtp.local_addr().unwrap().port();
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let invite_seen = Arc::new(std::sync::Mutex::new(None));
        let seen = invite_seen.clone();
        let done = std::thread::spawn(move || {
            let deadline = Instant::now() + within;
            let mut buf = vec![0u8; 65536];
            let mut invite = String::new();
            while Instant::now() < deadline {
                let Ok((n, from)) = sip.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                if msg.starts_with("INVITE ") {
                    let sdp = format!(
                        "v=0\r\no=far 1 1 IN IP4 {FAR}\r\ns=-\r\nc=IN IP4 {FAR}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
                    );
                    let contact = format!("Contact: <sip:far@{FAR}:{port}>\r\n");
                    sip.send_to(reply(&msg, "200 OK", &contact, &sdp).as_bytes(), from)
                        .unwrap();
                    *seen.lock().unwrap() = Some(msg.clone());
                    invite = msg;
                } else if msg.starts_with("BYE ") {
                    sip.send_to(reply(&msg, "200 OK", "", "").as_bytes(), from)
                        .unwrap();
                    return (invite, Some(msg));
                }
            }
            (invite, None)
        });
        FarParty {
            port,
            rtp,
            invite: invite_seen,
            done,
        }
    }

    /// The relay address the INVITE offered, once it arrived.
    fn relay_address(&self, within: Duration) -> SocketAddr {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(inv) = self.invite.lock().unwrap().as_deref() {
                let ip = inv.lines().find_map(|l| l.strip_prefix("c=IN IP4 "));
                let port = inv
                    .lines()
                    .find_map(|l| l.strip_prefix("m=audio "))
                    .and_then(|r| r.split_whitespace().next());
                if let (Some(ip), Some(port)) = (ip, port) {
                    return format!("{}:{}", ip.trim(), port).parse().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the far party got no INVITE with an SDP offer");
    }
}

/// Sends one RTP packet every 4 ms from `from` to `to` until `stop`;
/// returns how many it sent.
fn rtp_sender(
    from: UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut seq: u16 = 0;
        let mut sent = 0;
        let limit = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend(std::iter::repeat_n(0xffu8, 160));
            if from.send_to(&p, to).is_ok() {
                sent += 1;
            }
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(4));
        }
        sent
    })
}

/// Counts RTP packets of `ssrc` arriving on `sock` until `stop`, and then
/// for another half second.
fn rtp_counter(sock: UdpSocket, ssrc: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut got = 0;
        let mut stopped: Option<Instant> = None;
        let limit = Instant::now() + Duration::from_secs(70);
        while Instant::now() < limit {
            if stop.load(Ordering::Relaxed) {
                let at = *stopped.get_or_insert_with(Instant::now);
                if at.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 12
                && buf[8..12] == ssrc.to_be_bytes()
            {
                got += 1;
            }
        }
        got
    })
}

/// How the first run stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: nothing closed, nothing flushed.
    Crash,
    /// SIGUSR2: a planned restart that hands the bridged calls over.
    HandOver,
}

/// A call caller → +15557000005 → far party through the daemon, with RTP
/// flowing both ways while the daemon stops (`stop`) and starts again on
/// the same store; then the caller hangs up through the new run. Returns
/// (sent, received) per direction (caller→far, far→caller) and the daemon.
fn call_across_a_restart(
    t: &Topology,
    xdp: &str,
    pin: &str,
    stop_how: Stop,
) -> ([(u64, u64); 2], Daemon) {
    let far = FarParty::start(t, Duration::from_secs(60));
    let mut d = gateway_daemon(t, "+15557000005", far.port, xdp, pin);
    let (sip, rtp) = t.run(0, || {
        (
            UdpSocket::bind(format!("{CALLER}:0")).unwrap(),
            UdpSocket::bind(format!("{CALLER}:0")).unwrap(),
        )
    });
    let mut caller =
        Caller::with_socket(sip, d.sip_addr(), "restart-call-1").dialing("+15557000005");
    let relay_a = caller.invite(rtp.local_addr().unwrap().port());
    // The relay's far side: where the far party's INVITE offered media.
    let relay_b = far.relay_address(Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        rtp_sender(rtp.try_clone().unwrap(), relay_a, 0xa, stop.clone()),
        rtp_sender(far.rtp.try_clone().unwrap(), relay_b, 0xb, stop.clone()),
    ];
    let counters = [
        rtp_counter(far.rtp.try_clone().unwrap(), 0xa, stop.clone()),
        rtp_counter(rtp.try_clone().unwrap(), 0xb, stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    if xdp == "on" {
        assert_eq!(
            d.metric("gateway_xdp_pairs_active"),
            1.0,
            "offloaded before the restart\n{}",
            d.logs()
        );
    }
    match stop_how {
        Stop::Crash => d.crash(),
        Stop::HandOver => {
            let asked = Instant::now();
            d.sigusr2();
            // The call is left to the next run: the drain (5 s in tests)
            // does not wait for it.
            let exit = d.wait_exit(Duration::from_secs(4));
            assert!(
                exit.is_some_and(|e| e.success()),
                "exited at once and cleanly: {exit:?}\n{}",
                d.logs()
            );
            eprintln!("handed over and exited in {:?}", asked.elapsed());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    d.restart();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let sent = senders.map(|s| s.join().unwrap());
    let got = counters.map(|c| c.join().unwrap());

    // The new run knows the call: the caller's BYE reaches the far party.
    caller.bye();
    let (invite, bye) = far.done.join().unwrap();
    let bye = bye.unwrap_or_else(|| panic!("the far party got no BYE\n{}", d.logs()));
    assert_eq!(header(&bye, "Call-ID"), header(&invite, "Call-ID"));
    assert!(
        header(&bye, "To").unwrap().contains("tag=far-party"),
        "on the far dialog: {bye}"
    );
    d.wait_cdr_cause("caller_hangup");
    assert!(d.logs().contains("restored a bridged call"), "{}", d.logs());
    ([(sent[0], got[0]), (sent[1], got[1])], d)
}

/// A run of [`call_across_a_restart`] with the XDP path pinned in a bpffs
/// the test mounts; fields drop in order (the daemon first, the bpffs last).
struct KernelRun {
    d: Daemon,
    pin: std::path::PathBuf,
    _pass: Vec<XdpOffload>,
    _t: Topology,
    _bpffs: BpfFs,
}

/// A forwarded call relayed in the kernel across a restart stopped with
/// `stop`: every packet of both directions must arrive.
fn kernel_relayed_call_across(tag: &str, stop: Stop) -> KernelRun {
    let bpffs = BpfFs::mount(tag);
    let pin = bpffs.0.join("voice-gateway");
    let t = Topology::new(tag);
    // Frames redirected into the hosts' veths need a program there.
    let pass: Vec<XdpOffload> = [(0, "c0"), (2, "f0")]
        .into_iter()
        .map(|(i, dev)| {
            t.run(i, move || {
                XdpOffload::load(dev, XdpMode::Native).expect("XDP_PASS")
            })
        })
        .collect();
    let (flows, d) = call_across_a_restart(&t, "on", pin.to_str().unwrap(), stop);
    eprintln!(
        "across the restart (sent, received): caller→far {:?}, far→caller {:?}",
        flows[0], flows[1]
    );
    for (i, (sent, got)) in flows.into_iter().enumerate() {
        assert!(sent >= 500, "direction {i}: {sent} sent");
        assert_eq!(
            got,
            sent,
            "direction {i}: 0 lost across the restart\n{}",
            d.logs()
        );
    }
    KernelRun {
        d,
        pin,
        _pass: pass,
        _t: t,
        _bpffs: bpffs,
    }
}

#[test]
fn forwarded_call_keeps_its_media_in_the_kernel_and_its_dialogs_across_a_daemon_restart() {
    if !available() {
        return;
    }
    let run = kernel_relayed_call_across("k", Stop::Crash);
    let d = &run.d;
    // The second run adopted the call's pinned rules rather than
    // offloading it afresh, and it removed them at the BYE.
    assert_eq!(d.metric("gateway_xdp_offloads_total"), 0.0, "{}", d.logs());
    assert_eq!(d.metric("gateway_xdp_pairs_active"), 0.0);
    let left = XdpOffload::load_pinned(&run.pin).map(|o| o.rules().len());
    assert!(matches!(left, Ok(0)), "no rule left pinned: {left:?}");
    let pin = run.pin.clone();
    drop(run.d);
    let _ = XdpOffload::unpin(&pin);
}

#[test]
fn forwarded_call_keeps_its_dialogs_across_a_daemon_restart_in_userspace() {
    if !available() {
        return;
    }
    let t = Topology::new("u");
    let (flows, d) = call_across_a_restart(&t, "off", "", Stop::Crash);
    eprintln!(
        "across the restart (sent, received): caller→far {:?}, far→caller {:?}",
        flows[0], flows[1]
    );
    for (i, (sent, got)) in flows.into_iter().enumerate() {
        // Nothing relays while no daemon runs; the adopted relay carries
        // the rest (at least the last second and a half).
        assert!(
            got + 50 < sent && got >= sent / 2,
            "direction {i}: {got} of {sent} received\n{}",
            d.logs()
        );
    }
    assert!(d.metric("gateway_rtp_tx_packets_total") > 300.0);
}

#[test]
fn sigusr2_hands_a_kernel_relayed_call_over_to_the_next_run() {
    if !available() {
        return;
    }
    let run = kernel_relayed_call_across("h", Stop::HandOver);
    let d = &run.d;
    assert!(
        d.logs().contains("handing bridged calls over"),
        "{}",
        d.logs()
    );
    let pin = run.pin.clone();
    drop(run.d);
    let _ = XdpOffload::unpin(&pin);
}
