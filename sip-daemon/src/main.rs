//! `sip-daemon`: the voice gateway's SIP server and media appliance.

use anyhow::Context;
use clap::Parser;
use sip_daemon::config::Config;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sip-daemon",
    version,
    about = "SIP gateway between carriers and AI agents"
)]
struct Args {
    /// Run with this TOML configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    config: Option<PathBuf>,
    /// Validate this configuration file and exit (0 when valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // mimalloc asks for transparent huge pages on its arenas and purges
    // freed memory after 10 ms; every refault then zeroes a 2 MiB page.
    // Under call load that cost ~10% of CPU per call (README, "CPU per
    // call"), so this process opts out of THP.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let args = Args::parse();
    if let Some(path) = args.check_config {
        let cfg = Config::load(&path)?;
        let listeners = cfg.listeners().map_err(anyhow::Error::msg)?;
        println!(
            "{}: ok ({} listeners, {} trunks, {} numbers, {} SIP users, store {})",
            path.display(),
            listeners.len(),
            cfg.trunks.len(),
            cfg.numbers.len(),
            cfg.sip_users.len(),
            redact(&cfg.store_url())
        );
        return Ok(());
    }
    let Some(path) = args.config else {
        anyhow::bail!("nothing to do: pass --config FILE (or --check-config FILE)");
    };
    let cfg = Config::load(&path)?;
    init_logging(&cfg);
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting");
    // Signalling runs on one thread by default: parsing is cheap and a
    // single-threaded runtime avoids a cross-thread wake-up per message
    // (measured: see README, "CPU per call"). Media has its own workers.
    let rt = if cfg.sip.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.sip.threads)
            .enable_all()
            .thread_name("sip")
            .build()
    }
    .context("starting the async runtime")?;
    rt.block_on(async move {
        let registry = prometheus::Registry::new();
        if let Some(addr) = cfg.api.listen {
            let reg = registry.clone();
            tokio::spawn(async move {
                if let Err(e) = api::http::serve(addr, reg).await {
                    tracing::error!(%addr, error = %e, "metrics listener failed");
                }
            });
        }
        let (_keep, shutdown) = tokio::sync::mpsc::channel(1);
        sip_daemon::daemon::run(cfg, registry, None, shutdown).await
    })?;
    Ok(())
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
