//! RFC 4475 torture messages against the real daemon, over UDP and TCP.
//!
//! The messages live outside this repository, in `../shared/corpus/rfc4475/`
//! (override with GATEWAY_RFC4475_DIR), with an `INDEX.tsv` whose columns
//! are file, rfc4475_section, title, kind and expected_behaviour. The last
//! column is a one-line summary of the RFC section; [`Expectation::read`]
//! turns each summary into what the daemon must do, and fails on a summary
//! it cannot read rather than guessing. Where the corpus README records an
//! outcome the RFC section also allows (`badbranch`, `mismatch02`,
//! `novelsc`, `escruri`, `zeromf`), the summary already names it.
//!
//! Each message is sent as it is, byte for byte: one datagram from a fresh
//! socket over UDP, one fresh connection over TCP. The daemon's answers are
//! collected until a well-formed OPTIONS sent after it on the same socket or
//! connection is answered (the daemon handles one socket's messages in
//! order, so nothing more is coming for a stateless answer), and then a
//! fresh OPTIONS must still get 200: the daemon is alive after every message.
//!
//! A message the stream framing cannot complete (no end of the header
//! section, or a Content-Length beyond the bytes sent: `clerr`, `baddn`'s
//! archive copy) gets no answer over TCP: the daemon waits for the rest, as
//! RFC 4475 §3.1.2.2 says, and closes the connection when the whole-message
//! deadline passes.
//!
//! Responses (`kind` = response) are never answered. Those the summary
//! calls valid must parse (the daemon's `garbage` rejection counter does not
//! move); those it calls invalid must be refused by the parser (it moves).
//!
//! The results, with Kamailio 5.6.3's answers from `reference-results/`, are
//! written to `$CARGO_TARGET_TMPDIR/rfc4475/table.md` for the README.
//!
//! A missing corpus fails the test, unless GATEWAY_TEST_SKIP_RFC4475=1
//! says explicitly that it is known to be missing (never in CI).

mod common;

use common::Daemon;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the daemon must do with one message.
#[derive(Debug, Clone, PartialEq)]
struct Expectation {
    /// Final statuses the RFC section allows.
    statuses: Vec<u16>,
    /// The request is valid: any final answer but a parse rejection (400,
    /// 505) is correct, as is none for a request that gets none (ACK).
    processed: bool,
    /// No answer at all.
    silent: bool,
    /// For responses: `Some(true)` must parse, `Some(false)` must not.
    parses: Option<bool>,
}

impl Expectation {
    /// Reads INDEX.tsv's `expected_behaviour` for a message of `kind`;
    /// `None` for the one row that is not a test (`-`, test.dat).
    fn read(kind: &str, text: &str) -> Result<Option<Expectation>, String> {
        let lc = text.trim().to_ascii_lowercase();
        if lc == "-" {
            return Ok(None);
        }
        let statuses: Vec<u16> = lc
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| w.len() == 3)
            .filter_map(|w| w.parse().ok())
            .filter(|n| (100..700).contains(n))
            .collect();
        let valid = lc.starts_with("valid");
        let invalid = lc.starts_with("invalid");
        match kind {
            "response" => {
                // RFC 3261 §18.1.2/§18.2.2: a UAS or proxy that receives a
                // response matching no transaction answers nothing; one
                // that fails to parse is discarded.
                if !(valid || invalid || lc.starts_with("drop")) {
                    return Err(format!("response expectation {text:?}"));
                }
                Ok(Some(Expectation {
                    statuses: vec![],
                    processed: false,
                    silent: true,
                    parses: if valid {
                        Some(true)
                    } else if invalid {
                        Some(false)
                    } else {
                        None
                    },
                }))
            }
            "request" => {
                // "may accept if Date ignored", "or ignore headers", "UAS
                // OPTIONS may answer": the RFC also allows processing it.
                let processed = valid
                    || lc.contains("may accept")
                    || lc.contains("ignore headers")
                    || lc.contains("may answer");
                if statuses.is_empty() && !processed {
                    return Err(format!("request expectation {text:?}"));
                }
                Ok(Some(Expectation {
                    statuses,
                    processed,
                    silent: false,
                    parses: None,
                }))
            }
            other => Err(format!("kind {other:?}")),
        }
    }

    /// Whether `answers` (the status codes of everything the daemon sent
    /// back, in order) meets the expectation.
    fn met_by(&self, answers: &[Answer]) -> Result<(), String> {
        if self.silent {
            return match answers.is_empty() {
                true => Ok(()),
                false => Err("answered a message that must get no answer".into()),
            };
        }
        let Some(last) = answers.iter().find(|a| a.status >= 200).or(answers.last()) else {
            return Err("no answer".into());
        };
        if self.statuses.contains(&last.status) {
            return last.carries_what_its_status_needs();
        }
        if self.processed && last.status < 200 {
            // Accepted into a transaction; its final answer comes later.
            return Ok(());
        }
        if self.processed && ![400, 505].contains(&last.status) {
            return last.carries_what_its_status_needs();
        }
        Err(format!(
            "answered {}, allowed {:?}{}",
            last.status,
            self.statuses,
            if self.processed {
                " or processing it"
            } else {
                ""
            }
        ))
    }
}

/// One response the daemon sent.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Option<Answer> {
        let text = String::from_utf8_lossy(bytes).to_string();
        let mut it = text.split_whitespace();
        (it.next()? == "SIP/2.0").then_some(())?;
        let status = it.next()?.parse().ok()?;
        Some(Answer { status, text })
    }

    fn header(&self, name: &str) -> Option<&str> {
        common::header(&self.text, name)
    }

    /// The headers RFC 3261 requires with some statuses.
    fn carries_what_its_status_needs(&self) -> Result<(), String> {
        let need: &[&str] = match self.status {
            401 => &["WWW-Authenticate"],
            405 | 501 => &["Allow"],
            // §21.4.13: the list of what is accepted.
            415 => &["Accept"],
            // §21.4.15: the unsupported option tags.
            420 => &["Unsupported"],
            _ => &[],
        };
        for h in need {
            if self.header(h).is_none() {
                return Err(format!("{} without {h}:\n{}", self.status, self.text));
            }
        }
        Ok(())
    }
}

struct Case {
    file: String,
    section: String,
    summary: String,
    bytes: Vec<u8>,
    expect: Option<Expectation>,
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

/// Where INDEX.tsv's one-line summary and the RFC section disagree, the
/// corpus README says the RFC text is normative: the file, what its row
/// says (checked, so a corrected corpus makes this entry fail loudly), the
/// statuses the section allows, and its words.
const RFC_OVER_SUMMARY: &[(&str, &str, &[u16], &str)] = &[(
    "sdp01.dat",
    "415 (Accept: text/nobodyKnowsThis)",
    &[406, 400],
    "§3.3.15: \"the response may not contain an SDP body. The recipient of this request \
     could respond with a 406 Not Acceptable [...] It is also appropriate to respond with a \
     400 Bad Request\"",
)];

/// Every row of INDEX.tsv, plus the corpus's fixed copy of `baddn.dat`
/// (its README: the archive copy lacks the blank line that ends the
/// header section, so only the fixed one tests the display-name rule).
fn load_corpus() -> Option<Vec<Case>> {
    let dir = corpus_dir();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).ok()?;
    let mut lines = index.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    assert_eq!(
        &head[..4],
        ["file", "rfc4475_section", "title", "kind"],
        "INDEX.tsv columns"
    );
    assert!(
        head[4].starts_with("expected_behaviour"),
        "INDEX.tsv columns"
    );
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, section, _title, kind, summary] = cols[..] else {
            panic!("INDEX.tsv row with {} columns: {line:?}", cols.len());
        };
        let bytes = std::fs::read(dir.join(file))
            .unwrap_or_else(|e| panic!("{file} named in INDEX.tsv: {e}"));
        let mut expect = match Expectation::read(kind, summary) {
            Ok(e) => e,
            Err(why) => {
                problems.push(format!("{file}: cannot read {why}"));
                continue;
            }
        };
        if let Some((_, row, statuses, rfc)) = RFC_OVER_SUMMARY.iter().find(|o| o.0 == file) {
            assert_eq!(summary, *row, "{file}: INDEX.tsv changed; revisit {rfc}");
            if let Some(e) = expect.as_mut() {
                e.statuses = statuses.to_vec();
            }
        }
        if file == "baddn.dat" {
            let alt = "baddn.crlf-fixed.dat.alt";
            let fixed = std::fs::read(dir.join(alt)).unwrap_or_else(|e| panic!("{alt}: {e}"));
            cases.push(Case {
                file: alt.into(),
                section: section.into(),
                summary: summary.into(),
                bytes: fixed,
                expect: expect.clone(),
            });
        }
        cases.push(Case {
            file: file.into(),
            section: section.into(),
            summary: summary.into(),
            bytes,
            expect,
        });
    }
    assert!(problems.is_empty(), "INDEX.tsv:\n{}", problems.join("\n"));
    assert_eq!(
        cases.iter().filter(|c| c.file.ends_with(".dat")).count(),
        50,
        "INDEX.tsv names the 49 numbered messages and test.dat"
    );
    Some(cases)
}

/// How a stream receiver frames the bytes (RFC 3261 §18.3), worked out
/// here from the bytes, independently of the daemon's framer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StreamFraming {
    /// Every message in the bytes is whole: an OPTIONS written after them
    /// is read as the next message.
    Complete,
    /// The first message is whole (and answered) but what follows it is
    /// not: `dblreq`'s trailing INVITE.
    FirstComplete,
    /// The first message has no end yet (no blank line, or a
    /// Content-Length beyond the bytes): the receiver waits for more.
    Incomplete,
    /// Content-Length is missing, negative or given twice: the stream
    /// cannot be cut into messages, so the receiver answers 400 if it can
    /// and closes the connection.
    Unframeable,
}

fn stream_framing(bytes: &[u8]) -> StreamFraming {
    let mut rest = bytes;
    let mut first = true;
    loop {
        let skip = rest
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        rest = &rest[skip..];
        if rest.is_empty() {
            return StreamFraming::Complete;
        }
        let incomplete = if first {
            StreamFraming::Incomplete
        } else {
            StreamFraming::FirstComplete
        };
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return incomplete;
        };
        let head = String::from_utf8_lossy(&rest[..end]);
        let lengths: Vec<&str> = head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| {
                let n = n.trim();
                n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")
            })
            .map(|(_, v)| v.trim())
            .collect();
        let Some(len) = (match lengths[..] {
            [one] => one.parse::<usize>().ok(),
            _ => None,
        }) else {
            return if first {
                StreamFraming::Unframeable
            } else {
                StreamFraming::FirstComplete
            };
        };
        if end + 4 + len > rest.len() {
            return incomplete;
        }
        rest = &rest[end + 4 + len..];
        first = false;
    }
}

fn ping(local: SocketAddr, to: SocketAddr, transport: &str, id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:ping@{local}>;tag={id}\r\nTo: <sip:ping@{to}>\r\nCall-ID: {id}@rfc4475\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn is_ping_answer(a: &Answer, id: &str) -> bool {
    a.header("Call-ID")
        .or_else(|| a.header("i"))
        .is_some_and(|c| c == format!("{id}@rfc4475"))
}

/// How long a message's answers are awaited once the barrier is answered
/// (a call's final response comes after media and routing).
const FINAL_WAIT: Duration = Duration::from_millis(1500);

fn udp_exchange(d: &Daemon, bytes: &[u8], id: &str) -> (Vec<Answer>, bool) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    sock.send_to(bytes, d.sip_addr()).unwrap();
    sock.send_to(&ping(local, d.sip_addr(), "UDP", id), d.sip_addr())
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut answers = Vec::new();
    let mut barrier = false;
    let start = Instant::now();
    loop {
        let final_seen = answers.iter().any(|a: &Answer| a.status >= 200);
        if barrier && (final_seen || start.elapsed() > FINAL_WAIT) {
            break;
        }
        if start.elapsed() > FINAL_WAIT * 2 {
            break;
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Some(a) = Answer::parse(&buf[..n])
        {
            if is_ping_answer(&a, id) {
                barrier |= a.status >= 200;
            } else {
                answers.push(a);
            }
        }
    }
    (answers, barrier)
}

/// Splits a byte stream into the status lines' messages it holds.
fn split_answers(stream: &[u8]) -> Vec<Answer> {
    let text = String::from_utf8_lossy(stream);
    text.split("SIP/2.0 ")
        .skip(1)
        .filter_map(|m| Answer::parse(format!("SIP/2.0 {m}").as_bytes()))
        .collect()
}

fn tcp_exchange(d: &Daemon, bytes: &[u8], id: &str) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(bytes).unwrap();
    let complete = stream_framing(bytes) == StreamFraming::Complete;
    if complete {
        s.write_all(&ping(local, d.sip_addr(), "TCP", id)).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut closed = false;
    loop {
        let answers = split_answers(&got);
        let barrier = answers
            .iter()
            .any(|a| is_ping_answer(a, id) && a.status >= 200);
        let final_seen = answers
            .iter()
            .any(|a| !is_ping_answer(a, id) && a.status >= 200);
        if closed
            || (barrier && (final_seen || start.elapsed() > FINAL_WAIT))
            || start.elapsed() > FINAL_WAIT * 2
        {
            let others = answers
                .into_iter()
                .filter(|a| !is_ping_answer(a, id))
                .collect();
            // Without a barrier (the bytes do not end where a message
            // does), what came over the whole wait is the answer.
            return (others, barrier || !complete);
        }
        match s.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => closed = true,
        }
    }
}

/// A fresh OPTIONS over `transport` gets 200.
fn alive(d: &Daemon, transport: &str, id: &str) -> bool {
    (0..5).any(|i| {
        let id = format!("{id}-live{i}");
        let answers = if transport == "udp" {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let local = sock.local_addr().unwrap();
            let _ = sock.send_to(&ping(local, d.sip_addr(), "UDP", &id), d.sip_addr());
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut out = Vec::new();
            while Instant::now() < deadline && out.is_empty() {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    out.extend(Answer::parse(&buf[..n]));
                }
            }
            out
        } else {
            let Ok(mut s) = TcpStream::connect(d.sip_addr()) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let local = s.local_addr().unwrap();
            let _ = s.write_all(&ping(local, d.sip_addr(), "TCP", &id));
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).unwrap_or(0);
            split_answers(&buf[..n])
        };
        answers
            .iter()
            .any(|a| is_ping_answer(a, &id) && a.status == 200)
    })
}

fn garbage_count(d: &Daemon) -> f64 {
    d.metric(r#"gateway_sip_rejections_total{reason="garbage"}"#)
}

/// Kamailio 5.6.3's answers per file, from the corpus.
fn kamailio(transport: &str) -> BTreeMap<String, String> {
    let path = corpus_dir().join(format!("reference-results/kamailio-5.6.3-{transport}.tsv"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Some((c.first()?.to_string(), short(c.get(3)?)))
        })
        .collect()
}

/// "SIP/2.0 180 Ringing | SIP/2.0 200 OK" -> "180, 200".
fn short(responses: &str) -> String {
    if responses.starts_with('(') {
        return "none".into();
    }
    responses
        .split(" | ")
        .filter_map(|r| r.split_whitespace().nth(1))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ours(answers: &[Answer]) -> String {
    if answers.is_empty() {
        return "none".into();
    }
    answers
        .iter()
        .map(|a| a.status.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn rfc4475_torture_over_udp_and_tcp() {
    let Some(cases) = load_corpus() else {
        if std::env::var("GATEWAY_TEST_SKIP_RFC4475").as_deref() == Ok("1")
            && std::env::var("CI").is_err()
        {
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
    // One daemon per transport, as two separate replays: the corpus's
    // messages share Call-IDs and branches, so over one daemon the TCP copy
    // would match the UDP copy's transaction and be absorbed as its
    // retransmission (RFC 3261 §17.2.3). Calls to the stream route end
    // quickly (nothing listens for the AI).
    let daemons = [
        Daemon::start("\n[stream]\nanswer_timeout_ms = 200\n"),
        Daemon::start("\n[stream]\nanswer_timeout_ms = 200\n"),
    ];
    let kam = [kamailio("udp"), kamailio("tcp")];
    let mut failures = Vec::new();
    let mut table = String::from(
        "| file | §  | RFC 4475 expects | ours UDP | ours TCP | Kamailio UDP | Kamailio TCP |\n|---|---|---|---|---|---|---|\n",
    );
    for (n, c) in cases.iter().enumerate() {
        let mut row = Vec::new();
        for (transport, d) in ["udp", "tcp"].into_iter().zip(&daemons) {
            let id = format!("t{n}{transport}");
            let garbage_before = c
                .expect
                .as_ref()
                .and_then(|e| e.parses)
                .map(|_| garbage_count(d));
            let (answers, barrier) = if transport == "udp" {
                udp_exchange(d, &c.bytes, &id)
            } else {
                tcp_exchange(d, &c.bytes, &id)
            };
            let label = format!("{transport} {} (§{})", c.file, c.section);
            if !barrier {
                failures.push(format!("{label}: the OPTIONS sent after it got no answer"));
            }
            let mut expect = c.expect.clone();
            if transport == "tcp" {
                match stream_framing(&c.bytes) {
                    // RFC 4475 §3.1.2.2: over a stream, wait for the rest.
                    StreamFraming::Incomplete => {
                        expect = expect.map(|_| Expectation {
                            statuses: vec![],
                            processed: false,
                            silent: true,
                            parses: None,
                        })
                    }
                    // RFC 3261 §18.3: Content-Length is mandatory on a
                    // stream; without a usable one the stream cannot be
                    // framed, so a 400 before closing is also correct.
                    StreamFraming::Unframeable => {
                        if let Some(e) = expect.as_mut()
                            && !e.silent
                            && !e.statuses.contains(&400)
                        {
                            e.statuses.push(400);
                        }
                    }
                    StreamFraming::Complete | StreamFraming::FirstComplete => {}
                }
            }
            if let Some(e) = &expect {
                if let Err(why) = e.met_by(&answers) {
                    failures.push(format!("{label}: {why} (expected {:?})", c.summary));
                }
                if let (Some(parses), Some(before)) = (e.parses, garbage_before) {
                    let moved = garbage_count(d) > before;
                    if moved == parses {
                        failures.push(format!(
                            "{label}: the response {} the parser (expected {:?})",
                            if parses { "failed" } else { "passed" },
                            c.summary
                        ));
                    }
                }
            }
            row.push(ours(&answers));
            assert!(
                alive(d, transport, &id),
                "daemon stopped answering OPTIONS over {transport} after {}; log:\n{}",
                c.file,
                d.logs()
            );
        }
        let k = |i: usize| kam[i].get(&c.file).cloned().unwrap_or_else(|| "—".into());
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            c.file,
            c.section,
            c.summary.replace('|', "/"),
            row[0],
            row[1],
            k(0),
            k(1)
        ));
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rfc4475");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("table.md"), &table).unwrap();
    eprintln!("{table}");
    eprintln!(
        "RFC 4475: {} messages x 2 transports, {} failures; table in {}",
        cases.len(),
        failures.len(),
        out.join("table.md").display()
    );
    assert!(
        failures.is_empty(),
        "RFC 4475 failures:\n{}\nlog tail:\n{}",
        failures.join("\n"),
        daemons
            .iter()
            .map(|d| d
                .logs()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n--\n")
    );
}

#[test]
fn every_index_summary_reads_as_an_expectation() {
    // The reader itself, on the summaries INDEX.tsv uses.
    let e = |k, t| Expectation::read(k, t).unwrap().unwrap();
    assert_eq!(e("request", "invalid: 400").statuses, vec![400]);
    assert!(!e("request", "invalid: 400").processed);
    let intmeth = e(
        "request",
        "valid: parse; unknown method -> 501 (or 405) acceptable",
    );
    assert!(intmeth.processed && intmeth.statuses == vec![501, 405]);
    assert_eq!(e("request", "registrar: 401/403").statuses, vec![401, 403]);
    assert!(e("request", "invalid Date; may accept if Date ignored").processed);
    let zeromf = e("request", "proxy: 483; UAS OPTIONS may answer");
    assert!(zeromf.processed && zeromf.statuses == vec![483]);
    assert_eq!(e("response", "invalid: drop").parses, Some(false));
    assert_eq!(
        e("response", "valid (UTF-8 reason phrase)").parses,
        Some(true)
    );
    assert!(e("response", "drop (must not send to broadcast)").silent);
    assert!(Expectation::read("request", "-").unwrap().is_none());
    assert!(Expectation::read("request", "something else").is_err());
    // Outcomes.
    let a = |s: u16, extra: &str| Answer {
        status: s,
        text: format!("SIP/2.0 {s} X\r\n{extra}\r\n"),
    };
    assert!(e("request", "invalid: 400").met_by(&[a(400, "")]).is_ok());
    assert!(e("request", "invalid: 400").met_by(&[a(404, "")]).is_err());
    assert!(e("request", "invalid: 400").met_by(&[]).is_err());
    assert!(e("request", "valid").met_by(&[a(404, "")]).is_ok());
    assert!(e("request", "valid").met_by(&[a(100, "")]).is_ok());
    assert!(e("request", "valid").met_by(&[a(400, "")]).is_err());
    let bext = e("request", "420 Bad Extension (with Unsupported)");
    assert!(bext.met_by(&[a(420, "")]).is_err());
    assert!(bext.met_by(&[a(420, "Unsupported: foo")]).is_ok());
    assert!(
        e("response", "invalid: drop")
            .met_by(&[a(400, "")])
            .is_err()
    );
    use StreamFraming::*;
    let f = stream_framing;
    assert_eq!(f(b"OPTIONS x SIP/2.0\r\nl: 2\r\n\r\nab"), Complete);
    assert_eq!(f(b"OPTIONS x SIP/2.0\r\nl: 3\r\n\r\nab"), Incomplete);
    assert_eq!(f(b"OPTIONS x SIP/2.0\r\nl: 0\r\n"), Incomplete);
    assert_eq!(f(b"OPTIONS x SIP/2.0\r\nl: -1\r\n\r\n"), Unframeable);
    assert_eq!(f(b"OPTIONS x SIP/2.0\r\n\r\n"), Unframeable);
    assert_eq!(
        f(b"OPTIONS x SIP/2.0\r\nl: 0\r\n\r\n\r\nINVITE y SIP/2.0\r\nl: 9\r\n\r\nab"),
        FirstComplete
    );
}
