//! A webhook receiver for end-to-end tests: a real HTTP/1.1 server on
//! loopback that records every request (path, headers, body) and answers
//! each path with a scripted status, body and delay.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

pub struct HookServer {
    pub port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl HookServer {
    /// Answers `path` with its reply; other paths get 200 `{}`.
    pub fn start(replies: Vec<(&str, Reply)>) -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let replies: HashMap<String, Reply> = replies
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let rec = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let rec = rec.clone();
                let replies = replies.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = r.read_exact(&mut body);
                    rec.lock().unwrap().push(Hit {
                        path: path.clone(),
                        headers,
                        body: String::from_utf8_lossy(&body).to_string(),
                        at: Instant::now(),
                    });
                    let reply = replies.get(&path).cloned().unwrap_or(Reply {
                        status: 200,
                        body: "{}".into(),
                        delay: Duration::ZERO,
                    });
                    std::thread::sleep(reply.delay);
                    // A TwiML answer is XML, as a Twilio app serves it.
                    let ct = if reply.body.trim_start().starts_with('<') {
                        "text/xml"
                    } else {
                        "application/json"
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        reply.status,
                        reply.body.len(),
                        reply.body
                    );
                });
            }
        });
        HookServer { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `n` requests.
    pub fn wait(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let h = self.hits(path);
            if h.len() >= n {
                return h;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{path}: {} of {n} requests", self.hits(path).len());
    }
}

/// Checks `X-Gateway-Signature` of `hit` against `secret`.
pub fn signed_by(hit: &Hit, secret: &str) -> bool {
    let Some(sig) = hit.headers.get("x-gateway-signature") else {
        return false;
    };
    let Some(t) = sig
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return false;
    };
    *sig == api::webhook::signature(secret, t, hit.body.as_bytes())
}
