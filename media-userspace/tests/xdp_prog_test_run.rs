//! Runs the embedded XDP relay program in the kernel with
//! `BPF_PROG_TEST_RUN` (aya's `TestRun`) on hand-built frames.
//!
//! Needs the program built in (eBPF toolchain at build time) and root
//! (CAP_BPF). Without either the tests FAIL loudly; set
//! `GATEWAY_TEST_SKIP_XDP=1` to skip them instead, which
//! `GATEWAY_REQUIRE_XDP=1` (CI) overrides.

use media_userspace::xdp::{
    Attached, FLAG_DROP, FLAG_REDIRECT, FLAG_ZERO_UDP_CSUM, LegCounters, RelayKey, RelayRule,
    XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, XdpError, XdpMode, XdpOffload, build_info,
    program_bytes,
};

const LOCAL_IP: [u8; 4] = [10, 0, 0, 1];
const LOCAL_PORT: u16 = 30_000;
const PEER_A_IP: [u8; 4] = [192, 0, 2, 55];
const PEER_A_PORT: u16 = 16_384;
const OUT_SRC_IP: [u8; 4] = [10, 0, 1, 1];
const OUT_SRC_PORT: u16 = 40_002;
const PEER_B_IP: [u8; 4] = [198, 51, 100, 7];
const PEER_B_PORT: u16 = 5004;
const IN_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const IN_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const OUT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const OUT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

fn env_is_set(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Fails (or, with GATEWAY_TEST_SKIP_XDP=1 and without
/// GATEWAY_REQUIRE_XDP=1, skips) when the environment can't run the test.
fn unavailable(why: &str) -> Option<XdpOffload> {
    let require = env_is_set("GATEWAY_REQUIRE_XDP");
    if !require && env_is_set("GATEWAY_TEST_SKIP_XDP") {
        eprintln!("SKIPPED (GATEWAY_TEST_SKIP_XDP=1): XDP test-run: {why}");
        return None;
    }
    panic!(
        "\n*** XDP program test cannot run: {why}\n\
         *** build info: {}\n\
         *** Needs root and the eBPF toolchain (scripts/setup.sh test). Set \
         GATEWAY_TEST_SKIP_XDP=1 to skip (ignored when GATEWAY_REQUIRE_XDP=1).\n",
        build_info()
    );
}

/// The loaded program with one IPv4 rule installed, or `None` if skipped.
fn setup(flags: u32) -> Option<XdpOffload> {
    if program_bytes().is_none() {
        return unavailable("the XDP program was not built into this binary");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("not running as root");
    }
    let mut offload = match XdpOffload::load_detached() {
        Ok(o) => o,
        Err(e @ (XdpError::NotBuilt | XdpError::Permission { .. })) => {
            return unavailable(&e.to_string());
        }
        Err(e) => panic!("loading the XDP program failed: {e}\n{e:?}"),
    };
    offload
        .insert_rule(key(), rule(flags))
        .expect("insert rule");
    Some(offload)
}

fn key() -> RelayKey {
    RelayKey::v4(LOCAL_IP, LOCAL_PORT)
}

fn rule(flags: u32) -> RelayRule {
    RelayRule::v4(
        OUT_SRC_IP,
        OUT_SRC_PORT,
        PEER_B_IP,
        PEER_B_PORT,
        OUT_SRC_MAC,
        OUT_DST_MAC,
        1,
        flags,
    )
}

// ---- frame building and checking ------------------------------------

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut h = hdr.to_vec();
    h[10] = 0;
    h[11] = 0;
    !fold(sum16(&h))
}

fn udp_checksum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    let pseudo = sum16(&src) + sum16(&dst) + 17 + u32::try_from(udp.len()).unwrap();
    match !fold(pseudo + sum16(&u)) {
        0 => 0xffff,
        c => c,
    }
}

struct Frame {
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
    /// IPv4 options (multiple of 4 bytes).
    options: Vec<u8>,
    frag_off: u16,
    protocol: u8,
    udp_csum: bool,
}

impl Frame {
    fn to_local() -> Self {
        // An RTP-looking payload: V=2, PT 0, seq, ts, ssrc, 160 bytes of μ-law.
        let mut payload = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0x0a, 0, 0xde, 0xad, 0xbe, 0xef,
        ];
        payload.extend((0..160).map(|i| (i * 7 % 251) as u8));
        Self {
            src_ip: PEER_A_IP,
            dst_ip: LOCAL_IP,
            src_port: PEER_A_PORT,
            dst_port: LOCAL_PORT,
            payload,
            options: Vec::new(),
            frag_off: 0x4000, // DF
            protocol: 17,
            udp_csum: true,
        }
    }

    fn build(&self) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let udp_len = 8 + self.payload.len();
        let tot_len = ihl + udp_len;
        let mut f = Vec::new();
        f.extend(IN_DST_MAC);
        f.extend(IN_SRC_MAC);
        f.extend(0x0800u16.to_be_bytes());
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0xb8];
        ip.extend(u16::try_from(tot_len).unwrap().to_be_bytes());
        ip.extend([0x1c, 0x46]); // id
        ip.extend(self.frag_off.to_be_bytes());
        ip.extend([64, self.protocol, 0, 0]);
        ip.extend(self.src_ip);
        ip.extend(self.dst_ip);
        ip.extend(&self.options);
        let c = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(&ip);
        let mut udp = Vec::new();
        udp.extend(self.src_port.to_be_bytes());
        udp.extend(self.dst_port.to_be_bytes());
        udp.extend(u16::try_from(udp_len).unwrap().to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(&self.payload);
        if self.udp_csum {
            let c = udp_checksum(self.src_ip, self.dst_ip, &udp);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        f.extend(&udp);
        f
    }
}

fn run(o: &XdpOffload, frame: &[u8]) -> (u32, Vec<u8>) {
    let out = o.test_run(frame).expect("BPF_PROG_TEST_RUN");
    (out.action, out.frame)
}

fn assert_pass_unchanged(o: &XdpOffload, frame: &[u8], what: &str) {
    let (action, out) = run(o, frame);
    assert_eq!(action, XDP_PASS, "{what}: expected XDP_PASS");
    assert_eq!(out, frame, "{what}: XDP_PASS must not modify the frame");
}

/// Checks a rewritten frame: headers, checksums, untouched payload.
fn assert_rewritten(orig: &[u8], out: &[u8], expect_udp_csum: Option<bool>) {
    assert_eq!(out.len(), orig.len());
    assert_eq!(&out[0..6], &OUT_DST_MAC, "dst MAC");
    assert_eq!(&out[6..12], &OUT_SRC_MAC, "src MAC");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(&ip[12..16], &OUT_SRC_IP, "src IP");
    assert_eq!(&ip[16..20], &PEER_B_IP, "dst IP");
    // Everything else in the IP header is as it was.
    assert_eq!(&ip[..10], &orig[14..24]);
    let ip_csum = u16::from_be_bytes([ip[10], ip[11]]);
    assert_eq!(ip_csum, ipv4_checksum(ip), "IPv4 header checksum");
    assert_eq!(fold(sum16(ip)), 0xffff, "IPv4 header sums to all ones");
    let udp = &out[34..];
    assert_eq!(
        u16::from_be_bytes([udp[0], udp[1]]),
        OUT_SRC_PORT,
        "src port"
    );
    assert_eq!(
        u16::from_be_bytes([udp[2], udp[3]]),
        PEER_B_PORT,
        "dst port"
    );
    assert_eq!(&udp[4..6], &orig[38..40], "UDP length");
    assert_eq!(&udp[8..], &orig[42..], "payload untouched");
    let udp_csum = u16::from_be_bytes([udp[6], udp[7]]);
    match expect_udp_csum {
        Some(true) => assert_eq!(
            udp_csum,
            udp_checksum(OUT_SRC_IP, PEER_B_IP, udp),
            "UDP checksum"
        ),
        Some(false) | None => assert_eq!(udp_csum, 0, "UDP checksum must be zero"),
    }
}

// ---- tests ----------------------------------------------------------

#[test]
fn matching_ipv4_udp_is_rewritten_and_sent_back() {
    let Some(o) = setup(0) else { return };
    let frame = Frame::to_local().build();
    let (action, out) = run(&o, &frame);
    assert_eq!(action, XDP_TX);
    assert_rewritten(&frame, &out, Some(true));

    let c = o.counters(&key()).unwrap().expect("counters exist");
    assert_eq!(c.packets, 1);
    assert_eq!(c.bytes, frame.len() as u64);
    assert!(c.last_seen_ns > 0);
    let (action, _) = run(&o, &frame);
    assert_eq!(action, XDP_TX);
    let c2 = o.counters(&key()).unwrap().unwrap();
    assert_eq!(c2.packets, 2);
    assert_eq!(c2.bytes, 2 * frame.len() as u64);
    assert!(c2.last_seen_ns >= c.last_seen_ns);
}

#[test]
fn checksums_stay_valid_across_many_payloads_and_ports() {
    let Some(o) = setup(0) else { return };
    // Vary the source (not part of the key) and payload so the incremental
    // update meets carries and odd lengths.
    for i in 0..64u16 {
        let mut f = Frame::to_local();
        f.src_ip = [203, 0, (i * 37) as u8, (255 - i * 3) as u8];
        f.src_port = 1024 + i * 997;
        f.payload.truncate(1 + usize::from(i) * 3);
        f.payload
            .iter_mut()
            .for_each(|b| *b = b.wrapping_mul(i as u8 | 1));
        let frame = f.build();
        let (action, out) = run(&o, &frame);
        assert_eq!(action, XDP_TX, "iteration {i}");
        assert_rewritten(&frame, &out, Some(true));
    }
}

#[test]
fn zero_udp_checksum_stays_zero_and_flag_zeroes_it() {
    let Some(o) = setup(0) else { return };
    let mut f = Frame::to_local();
    f.udp_csum = false;
    let frame = f.build();
    let (action, out) = run(&o, &frame);
    assert_eq!(action, XDP_TX);
    assert_rewritten(&frame, &out, Some(false));

    let Some(o) = setup(FLAG_ZERO_UDP_CSUM) else {
        return;
    };
    let frame = Frame::to_local().build();
    let (action, out) = run(&o, &frame);
    assert_eq!(action, XDP_TX);
    assert_rewritten(&frame, &out, None);
}

#[test]
fn redirect_flag_redirects() {
    let Some(o) = setup(FLAG_REDIRECT) else {
        return;
    };
    let frame = Frame::to_local().build();
    let (action, out) = run(&o, &frame);
    assert_eq!(action, XDP_REDIRECT);
    assert_rewritten(&frame, &out, Some(true));
}

#[test]
fn peer_check_forwards_only_the_latched_source() {
    let Some(mut o) = setup(0) else { return };
    o.insert_rule(key(), rule(0).from_peer_v4(PEER_A_IP, PEER_A_PORT))
        .expect("replace rule");
    let frame = Frame::to_local().build();
    let (action, out) = run(&o, &frame);
    assert_eq!(action, XDP_TX, "the latched peer is forwarded");
    assert_rewritten(&frame, &out, Some(true));
    let mut f = Frame::to_local();
    f.src_port = PEER_A_PORT + 1;
    assert_pass_unchanged(&o, &f.build(), "another source port");
    let mut f = Frame::to_local();
    f.src_ip = [192, 0, 2, 56];
    assert_pass_unchanged(&o, &f.build(), "another source address");
    assert_eq!(
        o.counters(&key()).unwrap().map(|c| c.packets),
        Some(1),
        "only the peer's packet counted"
    );
}

#[test]
fn drop_flag_counts_and_drops() {
    let Some(o) = setup(FLAG_DROP) else { return };
    let frame = Frame::to_local().build();
    let (action, _) = run(&o, &frame);
    assert_eq!(action, XDP_DROP);
    let c = o.counters(&key()).unwrap().expect("counted");
    assert_eq!((c.packets, c.bytes), (1, frame.len() as u64));
    let mut f = Frame::to_local();
    f.dst_port = LOCAL_PORT + 2;
    assert_pass_unchanged(&o, &f.build(), "other port");
}

#[test]
fn non_matching_udp_passes_unchanged() {
    let Some(o) = setup(0) else { return };
    let mut f = Frame::to_local();
    f.dst_port = LOCAL_PORT + 2;
    assert_pass_unchanged(&o, &f.build(), "other port");
    let mut f = Frame::to_local();
    f.dst_ip = [10, 0, 0, 2];
    assert_pass_unchanged(&o, &f.build(), "other address");
    assert_eq!(
        o.counters(&key()).unwrap(),
        Some(LegCounters::default()),
        "nothing counted"
    );
}

#[test]
fn ipv4_with_options_passes() {
    let Some(o) = setup(0) else { return };
    let mut f = Frame::to_local();
    f.options = vec![0x94, 0x04, 0, 0]; // Router Alert
    assert_pass_unchanged(&o, &f.build(), "IPv4 options");
}

#[test]
fn fragments_pass() {
    let Some(o) = setup(0) else { return };
    let mut f = Frame::to_local();
    f.frag_off = 0x2000; // MF, offset 0: first fragment
    assert_pass_unchanged(&o, &f.build(), "first fragment");
    let mut f = Frame::to_local();
    f.frag_off = 0x0010; // offset 128 bytes, last fragment
    assert_pass_unchanged(&o, &f.build(), "later fragment");
}

#[test]
fn truncated_and_malformed_pass() {
    let Some(o) = setup(0) else { return };
    let frame = Frame::to_local().build();
    for len in [14, 20, 33, 34, 41] {
        assert_pass_unchanged(&o, &frame[..len], &format!("truncated to {len}"));
    }
    // Headers complete, but the IPv4 total length runs past the frame.
    assert_pass_unchanged(&o, &frame[..60], "cut payload");
    // UDP length disagreeing with the IPv4 total length.
    let mut bad = frame.clone();
    bad[38] ^= 0x01;
    assert_pass_unchanged(&o, &bad, "bad UDP length");
    // IPv4 total length shorter than the headers.
    let mut bad = frame.clone();
    bad[16..18].copy_from_slice(&20u16.to_be_bytes());
    assert_pass_unchanged(&o, &bad, "tiny total length");
    // Not IPv4 version nibble.
    let mut bad = frame;
    bad[14] = 0x65;
    assert_pass_unchanged(&o, &bad, "IP version 6 in an IPv4 ethertype");
}

#[test]
fn arp_ipv6_vlan_and_tcp_pass() {
    let Some(o) = setup(0) else { return };
    // ARP who-has 10.0.0.1.
    let mut arp = Vec::new();
    arp.extend([0xff; 6]);
    arp.extend(IN_SRC_MAC);
    arp.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp.extend(IN_SRC_MAC);
    arp.extend(PEER_A_IP);
    arp.extend([0; 6]);
    arp.extend(LOCAL_IP);
    arp.resize(60, 0);
    assert_pass_unchanged(&o, &arp, "ARP");

    // IPv6/UDP (not offloaded yet).
    let mut v6 = Vec::new();
    v6.extend(IN_DST_MAC);
    v6.extend(IN_SRC_MAC);
    v6.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 17, 64]);
    v6.extend(
        [0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain([0u8; 11].iter())
            .chain([1].iter()),
    );
    v6.extend(
        [0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain([0u8; 11].iter())
            .chain([2].iter()),
    );
    v6.extend(PEER_A_PORT.to_be_bytes());
    v6.extend(LOCAL_PORT.to_be_bytes());
    v6.extend([0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_pass_unchanged(&o, &v6, "IPv6");

    // 802.1Q-tagged copy of a matching frame.
    let frame = Frame::to_local().build();
    let mut vlan = frame[..12].to_vec();
    vlan.extend([0x81, 0x00, 0x00, 0x64]);
    vlan.extend(&frame[12..]);
    assert_pass_unchanged(&o, &vlan, "VLAN-tagged");

    // TCP to the matching address and port.
    let mut f = Frame::to_local();
    f.protocol = 6;
    f.udp_csum = false;
    assert_pass_unchanged(&o, &f.build(), "TCP");
}

#[test]
fn removed_rule_stops_matching_and_returns_counters() {
    let Some(mut o) = setup(0) else { return };
    let frame = Frame::to_local().build();
    assert_eq!(run(&o, &frame).0, XDP_TX);
    let last = o.remove_rule(&key()).unwrap().expect("leg existed");
    assert_eq!(last.packets, 1);
    assert_eq!(last.bytes, frame.len() as u64);
    assert_eq!(o.rule(&key()).unwrap(), None);
    assert_eq!(o.counters(&key()).unwrap(), None);
    assert_pass_unchanged(&o, &frame, "after remove_rule");
    assert_eq!(o.remove_rule(&key()).unwrap(), None);
    // Replacing a rule keeps the leg's counters.
    o.insert_rule(key(), rule(0)).unwrap();
    assert_eq!(run(&o, &frame).0, XDP_TX);
    o.insert_rule(key(), rule(FLAG_ZERO_UDP_CSUM)).unwrap();
    assert_eq!(o.counters(&key()).unwrap().unwrap().packets, 1);
}

#[test]
fn unsupported_rules_are_rejected() {
    let Some(mut o) = setup(0) else { return };
    let v6_key = RelayKey::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 5);
    assert!(matches!(
        o.insert_rule(v6_key, rule(0)),
        Err(XdpError::Unsupported(_))
    ));
    assert!(matches!(
        o.insert_rule(key(), rule(1 << 30)),
        Err(XdpError::Unsupported(_))
    ));
}

#[test]
fn attach_native_falls_back_to_generic_in_a_private_netns() {
    let Some(_) = setup(0) else { return };
    // A fresh network namespace for this thread only: its `lo` has no
    // native XDP, and nothing outside the test sees the attachment.
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_NEWNET) only changes this thread's netns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());

        match XdpOffload::load("lo", XdpMode::Native) {
            Err(XdpError::Attach { .. }) => {}
            other => panic!("native XDP on lo should fail, got {other:?}"),
        }
        let o = XdpOffload::load("lo", XdpMode::NativeOrGeneric).expect("attach");
        assert_eq!(o.attached(), Some(("lo", Attached::Generic)));
        drop(o);
        let o = XdpOffload::load("lo", XdpMode::Generic).expect("re-attach after drop");
        assert_eq!(o.attached(), Some(("lo", Attached::Generic)));

        match XdpOffload::load("no-such-if0", XdpMode::Generic) {
            Err(XdpError::UnknownInterface(name)) => assert_eq!(name, "no-such-if0"),
            other => panic!("expected UnknownInterface, got {other:?}"),
        }
    })
    .join()
    .expect("netns thread");
}

/// Keeps the calling thread on one CPU: the guard meters per CPU, and
/// `BPF_PROG_TEST_RUN` runs on the caller's.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu().max(0) as usize;
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

const SIP_PORT: u16 = 5060;

fn sip_from(src: [u8; 4], dst_port: u16) -> Vec<u8> {
    Frame {
        src_ip: src,
        src_port: 5060,
        dst_port,
        payload: b"OPTIONS sip:gw SIP/2.0\r\n\r\n".to_vec(),
        ..Frame::to_local()
    }
    .build()
}

#[test]
fn the_sip_guard_drops_sources_over_their_rate_and_denied_networks() {
    let Some(mut o) = setup(0) else { return };
    pin_to_one_cpu();
    let a = [203, 0, 113, 10];
    let b = [203, 0, 113, 11];
    // Off: every SIP datagram passes, untouched and uncounted.
    for _ in 0..20 {
        assert_pass_unchanged(&o, &sip_from(a, SIP_PORT), "guard off");
    }
    assert_eq!(o.sip_guard().counters().unwrap(), Default::default());
    // One a second with bursts of 5: five pass, then drops, for this
    // source only (the test runs take microseconds, far from a refill).
    o.sip_guard().enable(SIP_PORT, 1, 5).unwrap();
    let verdicts: Vec<u32> = (0..8).map(|_| run(&o, &sip_from(a, SIP_PORT)).0).collect();
    assert_eq!(
        verdicts,
        [XDP_PASS; 5]
            .iter()
            .chain(&[XDP_DROP; 3])
            .copied()
            .collect::<Vec<_>>()
    );
    assert_pass_unchanged(
        &o,
        &sip_from(b, SIP_PORT),
        "another source has its own meter",
    );
    // Other ports are not the guard's: the relay rule still applies, and
    // unknown ports pass.
    let (action, _) = run(&o, &Frame::to_local().build());
    assert_eq!(action, XDP_TX, "the relayed leg is untouched");
    assert_pass_unchanged(&o, &sip_from(a, 5070), "another port");
    // A denied network is dropped before any meter; a trusted one is
    // never metered.
    o.sip_guard()
        .deny(std::net::Ipv4Addr::new(198, 51, 100, 0), 24)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(run(&o, &sip_from([198, 51, 100, 77], SIP_PORT)).0, XDP_DROP);
    }
    o.sip_guard()
        .trust(std::net::Ipv4Addr::new(192, 0, 2, 0), 24)
        .unwrap();
    for _ in 0..50 {
        assert_pass_unchanged(&o, &sip_from([192, 0, 2, 9], SIP_PORT), "a trunk");
    }
    let c = o.sip_guard().counters().unwrap();
    assert_eq!(
        (c.passed, c.rate_dropped, c.denied, c.trusted),
        (6, 3, 3, 50)
    );
    // Lifted: the network is metered again like any source.
    assert!(
        o.sip_guard()
            .undeny(std::net::Ipv4Addr::new(198, 51, 100, 0), 24)
            .unwrap()
    );
    assert!(
        !o.sip_guard()
            .undeny(std::net::Ipv4Addr::new(198, 51, 100, 0), 24)
            .unwrap()
    );
    assert_eq!(run(&o, &sip_from([198, 51, 100, 77], SIP_PORT)).0, XDP_PASS);
    // Off again: the over-rate source passes.
    o.sip_guard().disable().unwrap();
    assert_pass_unchanged(&o, &sip_from(a, SIP_PORT), "guard off again");
}

#[test]
fn the_sip_guard_lets_a_source_back_at_its_rate() {
    let Some(mut o) = setup(0) else { return };
    pin_to_one_cpu();
    let a = [203, 0, 113, 20];
    // Two a second, bursts of 2: after the burst, one more per 500 ms
    // (wide margins: the runs take microseconds).
    o.sip_guard().enable(SIP_PORT, 2, 2).unwrap();
    assert_eq!(run(&o, &sip_from(a, SIP_PORT)).0, XDP_PASS);
    assert_eq!(run(&o, &sip_from(a, SIP_PORT)).0, XDP_PASS);
    assert_eq!(run(&o, &sip_from(a, SIP_PORT)).0, XDP_DROP);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(run(&o, &sip_from(a, SIP_PORT)).0, XDP_PASS);
}
