//! RFC 4475 torture messages against the real daemon, over UDP and TCP.
//!
//! The messages and the expected behaviour of each live outside this
//! repository, in `../shared/corpus/rfc4475/` (override with
//! GATEWAY_RFC4475_DIR): one file per message and an `INDEX.tsv` whose
//! first column names the file and whose other columns say what must
//! happen: a status code (answered with it), `drop`/`discard`/`ignore`
//! (no answer), or `accept`/`valid` (processed: any answer but a 400-class
//! parse rejection, or none for ACKs and responses). After each message the
//! daemon must still answer a well-formed OPTIONS with 200.
//!
//! When the corpus is absent the test fails, unless
//! GATEWAY_TEST_SKIP_RFC4475=1 says explicitly that it is known to be
//! missing (scripts/test.sh sets it, loudly, only in that case).

mod common;

use common::{Daemon, options_ping};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Status(u16),
    NoResponse,
    Accepted,
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("GATEWAY_RFC4475_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/corpus/rfc4475"
            ))
        })
}

fn classify(cols: &[&str]) -> Option<Expect> {
    for c in cols {
        let lc = c.trim().to_ascii_lowercase();
        if let Some(code) = lc
            .split(|ch: char| !ch.is_ascii_digit())
            .find_map(|w| w.parse::<u16>().ok().filter(|n| (100..700).contains(n)))
        {
            return Some(Expect::Status(code));
        }
        if ["drop", "discard", "ignore", "no response", "silent"]
            .iter()
            .any(|w| lc.contains(w))
        {
            return Some(Expect::NoResponse);
        }
        if ["accept", "valid", "process", "ok"]
            .iter()
            .any(|w| lc == *w || lc.starts_with(w))
        {
            return Some(Expect::Accepted);
        }
    }
    None
}

fn load_index() -> Option<Vec<(String, Vec<u8>, Expect)>> {
    let dir = corpus_dir();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).ok()?;
    let mut cases = Vec::new();
    for line in index.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let file = cols[0].trim();
        let Ok(bytes) = std::fs::read(dir.join(file)) else {
            continue; // a header row
        };
        let expect = classify(&cols[1..])
            .unwrap_or_else(|| panic!("INDEX.tsv: cannot read the expectation of {line:?}"));
        cases.push((file.to_string(), bytes, expect));
    }
    assert!(!cases.is_empty(), "INDEX.tsv names no message files");
    Some(cases)
}

fn status_of(reply: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(reply);
    let mut it = text.split_whitespace();
    (it.next()? == "SIP/2.0").then_some(())?;
    it.next()?.parse().ok()
}

fn check(
    name: &str,
    transport: &str,
    expect: &Expect,
    got: Option<u16>,
    failures: &mut Vec<String>,
) {
    let ok = match (expect, got) {
        (Expect::Status(s), Some(g)) => *s == g,
        (Expect::NoResponse, None) => true,
        (Expect::Accepted, None) => true,
        (Expect::Accepted, Some(g)) => g != 400,
        _ => false,
    };
    if !ok {
        failures.push(format!(
            "{transport} {name}: expected {expect:?}, got {got:?}"
        ));
    }
}

fn udp_exchange(d: &Daemon, bytes: &[u8]) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    sock.send_to(bytes, d.sip_addr()).unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_millis(1000);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            last = status_of(&buf[..n]);
            if last.is_some_and(|s| s >= 200) {
                break;
            }
        }
    }
    last
}

fn tcp_exchange(d: &Daemon, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(1000);
    let mut last = None;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // Last final status on the stream.
                for part in got
                    .split(|b| *b == b'\n')
                    .filter(|l| l.starts_with(b"SIP/2.0 "))
                {
                    last = status_of(part);
                }
                if last.is_some_and(|s| s >= 200) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    last
}

#[test]
fn rfc4475_torture_over_udp_and_tcp() {
    let Some(cases) = load_index() else {
        if std::env::var("GATEWAY_TEST_SKIP_RFC4475").as_deref() == Ok("1") {
            eprintln!(
                "RFC 4475 corpus missing at {}: SKIPPED by GATEWAY_TEST_SKIP_RFC4475=1",
                corpus_dir().display()
            );
            return;
        }
        panic!(
            "RFC 4475 corpus missing at {} (INDEX.tsv)",
            corpus_dir().display()
        );
    };
    let d = Daemon::start("");
    let ping = UdpSocket::bind("127.0.0.1:0").unwrap();
    ping.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, bytes, expect) in &cases {
        for transport in ["udp", "tcp"] {
            let got = if transport == "udp" {
                udp_exchange(&d, bytes)
            } else {
                tcp_exchange(&d, bytes)
            };
            check(name, transport, expect, got, &mut failures);
            n += 1;
            let alive = (0..5).any(|i| options_ping(&ping, d.sip_addr(), n * 10 + i) == Some(200));
            assert!(
                alive,
                "daemon stopped answering OPTIONS after {transport} {name}; log:\n{}",
                d.logs()
            );
        }
    }
    eprintln!(
        "RFC 4475: {} messages x 2 transports, {} mismatches",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "RFC 4475 mismatches:\n{}",
        failures.join("\n")
    );
}
