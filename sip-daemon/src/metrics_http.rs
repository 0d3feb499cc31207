//! `GET /metrics` (Prometheus text) and `GET /healthz` on the API listener,
//! until the REST API (a later issue) takes that listener over.

use prometheus::{Encoder, TextEncoder};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves until the process ends. Requests are read up to 8 KiB; anything
/// but the two paths gets 404.
pub async fn serve(addr: SocketAddr, registry: prometheus::Registry) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..len]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => {
                    let mut out = Vec::new();
                    let enc = TextEncoder::new();
                    let _ = enc.encode(&registry.gather(), &mut out);
                    ("200 OK", enc.format_type().to_string(), out)
                }
                "/healthz" => ("200 OK", "text/plain".to_string(), b"ok\n".to_vec()),
                _ => (
                    "404 Not Found",
                    "text/plain".to_string(),
                    b"not found\n".to_vec(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}
