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
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Validate this configuration file and exit (0 when valid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a REST API bearer token signed with the configured key
    /// (api.jwt_secret, or api.jwt_private_key_file). The config file is
    /// --config, else $SIP_DAEMON_CONFIG, else deploy/examples/loopback.toml.
    Token {
        /// The account the token is scoped to.
        #[arg(long)]
        account: Option<String>,
        /// Also manage accounts and trunks.
        #[arg(long)]
        admin: bool,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// The `sub` claim (who the token is for).
        #[arg(long, default_value = "cli")]
        subject: String,
    },
    /// Detach the XDP fast path for good: remove the pins in
    /// media.xdp_pin_dir (the program stays attached across restarts
    /// otherwise). Legs still offloaded stop being forwarded.
    XdpUnpin,
}

/// Why `--ttl` is refused (clap shows it after the flag).
#[derive(Debug, thiserror::Error)]
enum TtlError {
    #[error("{0:?}: expected a number and a unit (s, m, h, d)")]
    NoNumber(String),
    #[error("{0:?}: unit must be s, m, h or d")]
    Unit(String),
    #[error("{0:?}: must be positive and sane")]
    OutOfRange(String),
}

fn parse_ttl(s: &str) -> Result<u64, TtlError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| TtlError::NoNumber(s.into()))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(TtlError::Unit(s.into())),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(TtlError::OutOfRange(s.into())),
    }
}

fn mint_token(
    path: &std::path::Path,
    account: Option<String>,
    admin: bool,
    ttl: u64,
    subject: String,
) -> anyhow::Result<String> {
    let cfg = Config::load(path)?;
    if account.is_none() && !admin {
        anyhow::bail!("pass --account ID (and/or --admin)");
    }
    let a = &cfg.api;
    let key = match (&a.jwt_secret, &a.jwt_private_key_file) {
        (Some(s), _) if a.jwt_algorithm.starts_with("HS") => s.clone().into_bytes(),
        (_, Some(p)) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        _ => anyhow::bail!(
            "{}: set api.jwt_secret (HS*) or api.jwt_private_key_file to mint tokens",
            path.display()
        ),
    };
    let now = api::auth::unix_now();
    let claims = api::auth::Claims {
        sub: subject,
        account,
        admin,
        aud: a.jwt_audience.clone(),
        iss: a.jwt_issuer.clone(),
        exp: now + ttl,
        nbf: now,
        iat: now,
    };
    Ok(api::auth::mint(&a.jwt_algorithm, &key, &claims)?)
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
    let config_path = || {
        args.config
            .clone()
            .or_else(|| std::env::var_os("SIP_DAEMON_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("deploy/examples/loopback.toml"))
    };
    if let Some(Command::XdpUnpin) = args.command {
        let cfg = Config::load(&config_path())?;
        let dir = PathBuf::from(&cfg.media.xdp_pin_dir);
        if cfg.media.xdp_pin_dir.is_empty() || !dir.exists() {
            println!(
                "nothing pinned (media.xdp_pin_dir = {:?})",
                cfg.media.xdp_pin_dir
            );
            return Ok(());
        }
        media_userspace::xdp::XdpOffload::unpin(&dir)?;
        println!("unpinned {}: the XDP program detaches", dir.display());
        return Ok(());
    }
    if let Some(Command::Token {
        account,
        admin,
        ttl,
        subject,
    }) = args.command
    {
        println!(
            "{}",
            mint_token(&config_path(), account, admin, ttl, subject)?
        );
        return Ok(());
    }
    if let Some(path) = args.check_config {
        let cfg = Config::load(&path)?;
        let listeners = cfg.listeners()?;
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
    // Capabilities are per thread: raised before any thread starts, so
    // every media worker and the loader inherit them.
    match media_userspace::xdp_host::capabilities::raise_xdp_capabilities() {
        Ok(raised) if !raised.is_empty() => {
            tracing::info!(capabilities = %raised.join(" "), "raised the XDP path's file capabilities")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the XDP path's capabilities"),
    }
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
    if cfg.log.format == sip_daemon::config::LogFormat::Json {
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
