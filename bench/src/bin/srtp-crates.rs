//! The SRTP crate choice, measured: what protecting and unprotecting one
//! RTP packet costs with `webrtc-srtp` 0.17 (the design card's crate,
//! frozen since webrtc-rs moved to `rtc`), with its sans-IO successor
//! `rtc-srtp` 0.21 used directly, and with the gateway's own session over
//! it (`media_userspace::srtp::SrtpSession`: bounded per-SSRC state, a
//! probe context for unknown SSRCs, counters). Same keys, same packets,
//! one thread pinned to CPU 1; heap allocations per packet counted by a
//! counting allocator. Each figure is the median of `--rounds` rounds of
//! `--packets` packets (bounded loops).
//!
//! Every crate's `protect` result is copied once into a `Vec` kept for the
//! unprotect pass (one allocation each, the same for all).
//!
//!   srtp-crates [--packets 100000] [--rounds 5]

use media_userspace::srtp::{SrtpKey, SrtpKeys, SrtpSession, SrtpSuite};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const KEY: [u8; 16] = [0x42; 16];
const SALT: [u8; 14] = [0x24; 14];

fn packet(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// ns per packet and allocations per packet of `f` over `n` packets.
fn time(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / n as f64;
    (ns, allocs)
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

/// One crate under test: protect a packet, unprotect one.
trait Srtp {
    fn protect(&mut self, p: &[u8]) -> Vec<u8>;
    fn unprotect(&mut self, p: &[u8]) -> usize;
}

struct Webrtc(webrtc_srtp::context::Context);

impl Webrtc {
    fn new() -> Webrtc {
        Webrtc(
            webrtc_srtp::context::Context::new(
                &KEY,
                &SALT,
                webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
                Some(webrtc_srtp::option::srtp_replay_protection(64)),
                None,
            )
            .expect("webrtc-srtp context"),
        )
    }
}

impl Srtp for Webrtc {
    fn protect(&mut self, p: &[u8]) -> Vec<u8> {
        self.0.encrypt_rtp(p).expect("protect").to_vec()
    }
    fn unprotect(&mut self, p: &[u8]) -> usize {
        self.0.decrypt_rtp(p).expect("unprotect").len()
    }
}

struct Rtc(rtc_srtp::context::Context);

impl Rtc {
    fn new() -> Rtc {
        use rtc_srtp::crypto::RTCCryptoProvider;
        let provider = rtc_srtp::crypto::providers::RingProvider::new();
        Rtc(rtc_srtp::context::Context::new(
            &KEY,
            &SALT,
            rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
            Some(rtc_srtp::option::srtp_replay_protection(64)),
            None,
            provider.crypto(),
        )
        .expect("rtc-srtp context"))
    }
}

impl Srtp for Rtc {
    fn protect(&mut self, p: &[u8]) -> Vec<u8> {
        self.0.encrypt_rtp(p).expect("protect").to_vec()
    }
    fn unprotect(&mut self, p: &[u8]) -> usize {
        self.0.decrypt_rtp(p).expect("unprotect").len()
    }
}

/// The session and a scratch buffer (the engine unprotects in place in
/// its receive buffer).
struct Ours(SrtpSession, Vec<u8>);

impl Ours {
    fn new() -> Ours {
        let mut ks = [0u8; 30];
        ks[..16].copy_from_slice(&KEY);
        ks[16..].copy_from_slice(&SALT);
        let k = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &ks).expect("key");
        Ours(
            SrtpSession::new(SrtpKeys {
                suite: SrtpSuite::AesCm128HmacSha1_80,
                tx: k,
                rx: k,
                replay_window: 64,
            })
            .expect("session"),
            Vec::with_capacity(2048),
        )
    }
}

impl Srtp for Ours {
    fn protect(&mut self, p: &[u8]) -> Vec<u8> {
        self.0.protect_rtp(p).expect("protect").to_vec()
    }
    fn unprotect(&mut self, p: &[u8]) -> usize {
        self.1.clear();
        self.1.extend_from_slice(p);
        self.0.unprotect_rtp(&mut self.1).expect("unprotect")
    }
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) pins this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let mut packets = 100_000usize;
    let mut rounds = 5usize;
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        match (w[0].as_str(), w.get(1)) {
            ("--packets", Some(n)) => packets = n.parse().expect("--packets N"),
            ("--rounds", Some(n)) => rounds = n.parse().expect("--rounds N"),
            (o, _) => panic!("unknown option {o}"),
        }
    }
    assert!((1..=5_000_000).contains(&packets) && (1..=50).contains(&rounds));
    pin(1);
    println!("{packets} packets per round, median of {rounds} rounds, AES_CM_128_HMAC_SHA1_80");
    println!(
        "| crate | RTP size | protect ns/packet | unprotect ns/packet | allocations/packet (protect, unprotect) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    type Make = fn() -> Box<dyn Srtp>;
    let crates: [(&str, Make); 3] = [
        ("webrtc-srtp 0.17.2", || Box::new(Webrtc::new())),
        ("rtc-srtp 0.21.1", || Box::new(Rtc::new())),
        ("ours (SrtpSession over rtc-srtp)", || Box::new(Ours::new())),
    ];
    for len in [172usize, 1212] {
        for (name, make) in crates {
            let mut p_rounds = Vec::new();
            let mut u_rounds = Vec::new();
            for _ in 0..rounds {
                // Fresh contexts per round: sequence numbers restart.
                let (mut tx, mut rx) = (make(), make());
                let mut p = packet(0, len);
                let mut wire = Vec::with_capacity(packets);
                p_rounds.push(time(packets, |i| {
                    p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                    wire.push(tx.protect(&p));
                }));
                u_rounds.push(time(packets, |i| {
                    assert_eq!(rx.unprotect(&wire[i]), len);
                }));
            }
            let (p, pa) = median(p_rounds);
            let (u, ua) = median(u_rounds);
            println!("| {name} | {len} B | {p:.0} | {u:.0} | {pa:.1}, {ua:.1} |");
        }
    }
}
