//! A minimal AI for trying the `stream` route by hand: a WebSocket server
//! speaking Twilio Media Streams that sends the caller's audio straight
//! back (so you hear yourself through the AI path), followed by a mark,
//! and logs every event it gets. Digits pressed are echoed as `sendDtmf`.
//!
//!   cargo run --release -p sip-daemon --example ai-echo [ADDR]   (default 127.0.0.1:8765)

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8765".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("AI echo bot on ws://{addr}/ (Twilio Media Streams)");
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(tcp).await {
                println!("{peer}: {e}");
            }
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream) -> anyhow::Result<()> {
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    let mut stream_sid = String::new();
    let mut frames = 0u64;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        match v["event"].as_str().unwrap_or_default() {
            "start" => {
                stream_sid = v["streamSid"].as_str().unwrap_or_default().to_string();
                println!("start: {}", v["start"]);
            }
            "media" => {
                frames += 1;
                let payload = &v["media"]["payload"];
                ws.send(Message::text(
                    json!({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
                        .to_string(),
                ))
                .await?;
                if frames.is_multiple_of(250) {
                    // Every 5 s of audio: a mark, echoed once it has played.
                    let mark = json!({"event": "mark", "streamSid": stream_sid,
                                      "mark": {"name": format!("5s-{frames}")}});
                    ws.send(Message::text(mark.to_string())).await?;
                }
            }
            "dtmf" => {
                println!("dtmf: {}", v["dtmf"]["digit"]);
                let digit = v["dtmf"]["digit"].as_str().unwrap_or_default();
                ws.send(Message::text(
                    json!({"event": "sendDtmf", "streamSid": stream_sid, "digits": digit})
                        .to_string(),
                ))
                .await?;
            }
            "mark" => println!("mark played: {}", v["mark"]["name"]),
            "stop" => {
                println!("stop after {frames} frames: {}", v["stop"]);
                break;
            }
            other => println!("{other}: {v}"),
        }
    }
    Ok(())
}
