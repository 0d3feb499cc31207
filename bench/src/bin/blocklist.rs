//! The cost of the blocked-caller check on every INVITE, against the cost
//! of parsing that INVITE (sip_daemon::sip::parse), in the same run: the
//! check is `RoutingTable::is_blocked`, the call the signalling core makes
//! before any media, webhook or database work. Lists of 0, 1,000 and
//! 100,000 entries (half exact callers, half prefixes, over 100 accounts);
//! callers that are blocked by an exact entry, by a prefix, and not at all.
//!
//!   cargo run --release -p bench --bin blocklist [ITERATIONS]

use sip_daemon::routing::RoutingTable;
use sip_daemon::sip::parse::{Framing, parse};
use std::hint::black_box;
use std::time::Instant;

const INVITE: &str = "INVITE sip:+15550001234@198.51.100.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:+15550001234@198.51.100.10>\r\n\
From: \"Alice\" <sip:+14155550100@203.0.113.7>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+14155550100@203.0.113.7:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 133\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn table(entries: usize) -> RoutingTable {
    use api::store::BlockedNumber;
    let blocked = (0..entries)
        .map(|i| BlockedNumber {
            id: format!("b{i}"),
            account_id: format!("acct{}", i % 100),
            number_pattern: (i % 3 == 0).then(|| "+15550001234".to_string()),
            caller_pattern: if i % 2 == 0 {
                format!("+1900{:07}", i)
            } else {
                format!("+44{:06}*", i)
            },
        })
        .collect();
    let (t, problems) = RoutingTable::build(Vec::new(), Vec::new(), blocked, Vec::new());
    assert!(problems.is_empty(), "{problems:?}");
    t
}

fn ns_per<F: FnMut() -> bool>(iters: u64, mut f: F) -> f64 {
    let mut hits = 0u64;
    let t0 = Instant::now();
    for _ in 0..iters {
        hits += u64::from(black_box(f()));
    }
    black_box(hits);
    t0.elapsed().as_nanos() as f64 / iters as f64
}

fn main() {
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let parse_ns = ns_per(iters / 4, || {
        parse(black_box(INVITE.as_bytes()), Framing::Datagram).is_ok()
    });
    println!("parse INVITE: {parse_ns:.0} ns");
    println!("entries  caller            ns/check  share of parse");
    for entries in [0usize, 1_000, 100_000] {
        let t = table(entries);
        // Entry i belongs to acct(i % 100): even i are exact callers
        // (+1900 and i), odd i prefixes (+44 and i, then *). So acct0 holds
        // the exact +19000000000 and acct1 the prefix +44000001*.
        let cases = [
            ("acct0", "+19000000000", "exact hit"),
            ("acct1", "+440000019999", "prefix hit"),
            ("acct1", "+14155550100", "miss"),
            ("acct_none", "+14155550100", "no blocks"),
        ];
        for (account, caller, what) in cases {
            let ns = ns_per(iters, || {
                t.is_blocked(black_box(account), "+15550001234", black_box(caller))
            });
            let expect = entries > 0 && what.ends_with("hit");
            assert_eq!(
                t.is_blocked(account, "+15550001234", caller),
                expect,
                "{entries} {what}"
            );
            println!(
                "{entries:>7}  {what:<16}  {ns:>8.0}  {:>6.1} %",
                100.0 * ns / parse_ns
            );
        }
    }
}
