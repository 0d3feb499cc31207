//! REST API latency under a fixed request rate: p50, p99 and max of
//! `POST /v1/calls` (each places a real INVITE) and of a filtered
//! `GET /v1/calls` over a large call table, with `GET /healthz` on the
//! same server and connections as the floor (what HTTP alone costs).
//! Open loop: requests start on a fixed schedule whatever the answers, so
//! a slow server shows as latency, not as a lower rate.
//!
//!   api-load seed DB_URL ROWS            # CDR rows for the list queries
//!   api-load run BASE_URL TOKEN FROM TO RATE SECS
//!
//! `bench/scripts/api.sh` runs the whole benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn seed(url: &str, rows: usize) {
    use api::store::{CallRecord, CdrEvent, Direction};
    let store = api::store::open(url).await.expect("store");
    let t0 = 1_790_000_000_000i64;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..rows {
        let id = format!("CA{:012x}{:020x}", t0 + i as i64, i);
        batch.push(CdrEvent::Started(CallRecord {
            id: id.clone(),
            account_id: Some(if i % 4 == 0 { "other" } else { "loopback" }.into()),
            direction: if i % 2 == 0 {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            from_number: format!("+1415555{:04}", i % 10_000),
            to_number: format!("+1555000{:04}", i % 1000),
            trunk: Some("local".into()),
            sip_call_id: format!("seed-{i}"),
            invite_at: t0 + i as i64,
            answer_at: Some(t0 + i as i64 + 1000),
            end_at: Some(t0 + i as i64 + 60_000),
            end_cause: Some("caller_hangup".into()),
            sip_status: Some(200),
            duration_ms: Some(59_000),
            media_mode: "stream".into(),
            node: None,
            media_security: None,
        }));
        if batch.len() == 1000 {
            store.apply_cdr_batch(&batch).await.expect("seed batch");
            batch.clear();
        }
    }
    store.apply_cdr_batch(&batch).await.expect("seed batch");
    println!("seeded {rows} call records");
}

/// Builds request `i` of a run.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Runs `total` requests at `rate`/s; latencies of the 2xx answers and
/// the count of the others.
async fn open_loop(
    client: &reqwest::Client,
    rate: u32,
    secs: u32,
    make: MakeRequest,
) -> (Vec<Duration>, usize) {
    let total = (rate * secs) as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let req = make(client, i);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = req.timeout(Duration::from_secs(10)).send().await;
            let ok = match r {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    let _ = resp.bytes().await;
                    ok
                }
                Err(_) => false,
            };
            (t.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((d, true)) => lat.push(d),
            _ => failed += 1,
        }
    }
    lat.sort();
    (lat, failed)
}

fn report(name: &str, rate: u32, lat: &[Duration], failed: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<34} {rate:>5}/s  n={:<6} failed={:<4} p50={:>6.2} ms  p99={:>6.2} ms  max={:>7.2} ms",
        lat.len(),
        failed,
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
}

async fn run(base: String, token: String, from: String, to: String, rate: u32, secs: u32) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let auth = format!("Bearer {token}");
    // Warm-up: connections and the first queries.
    for _ in 0..50 {
        let _ = client.get(format!("{base}/healthz")).send().await;
    }
    let b = base.clone();
    let (lat, failed) = open_loop(
        &client,
        rate,
        secs,
        Arc::new(move |c, _| c.get(format!("{b}/healthz"))),
    )
    .await;
    report("GET /healthz (floor)", rate, &lat, failed);

    let (b, a) = (base.clone(), auth.clone());
    let (lat, failed) = open_loop(
        &client,
        rate,
        secs,
        Arc::new(move |c, i| {
            c.get(format!(
                "{b}/v1/calls?direction=outbound&to=%2B1555000{:04}&limit=50",
                (i * 2 + 1) % 1000
            ))
            .header("Authorization", &a)
        }),
    )
    .await;
    report("GET /v1/calls (filtered, 50)", rate, &lat, failed);

    let (b, a) = (base.clone(), auth.clone());
    let (lat, failed) = open_loop(
        &client,
        rate,
        secs,
        Arc::new(move |c, _| {
            c.get(format!("{b}/v1/calls?active=true&limit=50"))
                .header("Authorization", &a)
        }),
    )
    .await;
    report("GET /v1/calls?active=true", rate, &lat, failed);

    let (b, a) = (base.clone(), auth.clone());
    let body = serde_json::json!({
        "from": from,
        "to": to,
        "stream": {"url": "ws://127.0.0.1:9/bench"},
        "ring_timeout_secs": 5,
    });
    let (lat, failed) = open_loop(
        &client,
        rate,
        secs,
        Arc::new(move |c, i| {
            c.post(format!("{b}/v1/calls"))
                .header("Authorization", &a)
                .header("Idempotency-Key", format!("bench-{i}"))
                .json(&body)
        }),
    )
    .await;
    report("POST /v1/calls (INVITE placed)", rate, &lat, failed);
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("seed") => rt.block_on(seed(&args[2], args[3].parse().expect("rows"))),
        Some("run") => rt.block_on(run(
            args[2].clone(),
            args[3].clone(),
            args[4].clone(),
            args[5].clone(),
            args[6].parse().expect("rate"),
            args[7].parse().expect("secs"),
        )),
        _ => eprintln!("usage: api-load seed DB_URL ROWS | run BASE TOKEN FROM TO RATE SECS"),
    }
}
