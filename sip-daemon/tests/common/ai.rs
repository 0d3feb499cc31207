//! A scripted AI for end-to-end tests: a real WebSocket server
//! (tokio-tungstenite) on loopback that records every frame the daemon
//! sends, with its arrival time, and plays a script once the stream's
//! `start` arrives.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// One step of the AI's script.
#[derive(Clone, Debug)]
pub enum Step {
    Text(String),
    Binary(Vec<u8>),
    Sleep(Duration),
    /// Close the socket with a close frame (the AI hangs up).
    Close,
    /// Drop the TCP connection without a close frame (a crash).
    Abort,
}

#[derive(Clone, Debug)]
pub enum Got {
    Text(serde_json::Value),
    /// Text that is not JSON.
    RawText(String),
    Binary(Vec<u8>),
    Closed,
}

#[derive(Clone, Debug)]
pub struct Frame {
    /// Connection number (0 first; reconnections count up).
    pub conn: usize,
    pub at: Instant,
    pub got: Got,
}

pub struct AiServer {
    pub port: u16,
    pub frames: Arc<Mutex<Vec<Frame>>>,
    _rt: tokio::runtime::Runtime,
}

impl AiServer {
    /// Starts a server; connection `i` plays `scripts[i]` (the last script
    /// repeats) after `start`.
    pub fn start(scripts: Vec<Vec<Step>>) -> AiServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let rec = frames.clone();
        rt.spawn(async move {
            let mut conn = 0usize;
            while let Ok((tcp, _)) = listener.accept().await {
                let script = scripts
                    .get(conn)
                    .or(scripts.last())
                    .cloned()
                    .unwrap_or_default();
                tokio::spawn(serve(tcp, conn, script, rec.clone()));
                conn += 1;
            }
        });
        AiServer {
            port,
            frames,
            _rt: rt,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/stream", self.port)
    }

    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }

    /// The binary frames (the `pcm` dialect's audio), in order.
    pub fn binary_frames(&self) -> Vec<Vec<u8>> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f.got {
                Got::Binary(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// The binary frames read as one run of 16-bit little-endian samples.
    pub fn binary_pcm(&self) -> Vec<i16> {
        self.binary_frames()
            .concat()
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    /// JSON frames with this `event`.
    pub fn events(&self, event: &str) -> Vec<(usize, Instant, serde_json::Value)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f.got {
                Got::Text(v) if v["event"] == event => Some((f.conn, f.at, v)),
                _ => None,
            })
            .collect()
    }

    /// Waits until `pred` holds over the frames, or panics after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&[Frame]) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if pred(&self.frames.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("AI never saw {what}; frames: {}", self.frames().len());
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    conn: usize,
    script: Vec<Step>,
    rec: Arc<Mutex<Vec<Frame>>>,
) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let player = tokio::spawn(async move {
        if started_rx.await.is_err() {
            return;
        }
        for step in script {
            match step {
                Step::Text(t) => {
                    let _ = tx.send(Message::text(t)).await;
                }
                Step::Binary(b) => {
                    let _ = tx.send(Message::binary(b)).await;
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Close => {
                    let _ = tx.send(Message::Close(None)).await;
                    return;
                }
                Step::Abort => {
                    // Dropping both halves without a close frame.
                    return;
                }
            }
        }
        // Keep the sink alive until the daemon closes.
        std::future::pending::<()>().await;
    });
    let mut started = Some(started_tx);
    let abort = player.abort_handle();
    while let Some(msg) = rx.next().await {
        let got = match msg {
            Ok(Message::Text(t)) => match serde_json::from_str::<serde_json::Value>(t.as_str()) {
                Ok(v) => Got::Text(v),
                Err(_) => Got::RawText(t.as_str().to_string()),
            },
            Ok(Message::Binary(b)) => Got::Binary(b.to_vec()),
            Ok(Message::Close(_)) | Err(_) => Got::Closed,
            Ok(_) => continue,
        };
        // Twilio-like dialects say `start`; jambonz opens with the call's
        // metadata (a top-level `callSid`).
        let is_start =
            matches!(&got, Got::Text(v) if v["event"] == "start" || v.get("callSid").is_some());
        let closed = matches!(got, Got::Closed);
        rec.lock().unwrap().push(Frame {
            conn,
            at: Instant::now(),
            got,
        });
        if is_start && let Some(s) = started.take() {
            let _ = s.send(());
        }
        if closed {
            break;
        }
        if player.is_finished() {
            // The script closed or aborted the socket.
            break;
        }
    }
    abort.abort();
}
