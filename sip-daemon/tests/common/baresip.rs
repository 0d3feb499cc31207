//! baresip (Debian `baresip-core`) as a real SIP phone in tests,
//! headless: a WAV file as microphone, the decoded far end recorded by its
//! `sndfile` module.
#![allow(dead_code)]

use super::{Daemon, tone_share};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn tone(hz: f64, rate: u32, ms: usize, amp: f64) -> Vec<i16> {
    (0..ms * rate as usize / 1000)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() * amp) as i16
        })
        .collect()
}

pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    std::fs::write(path, w).unwrap();
}

/// 16-bit PCM samples of a WAV file (the `data` chunk).
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    let rate = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        if &b[i..i + 4] == b"data" {
            let end = (i + 8 + len).min(b.len());
            let s = b[i + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, s);
        }
        i += 8 + len;
    }
    (rate, Vec::new())
}

/// 20 ms frames of `s` with sound in them, and the median share of `hz`
/// in those frames.
pub fn tone_in_frames(s: &[i16], hz: f64, rate: u32) -> (usize, f64) {
    let n = rate as usize / 50;
    let mut shares: Vec<f64> = s
        .chunks_exact(n)
        .filter(|f| f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n as f64 > 500.0 * 500.0)
        .map(|f| tone_share(f, hz, f64::from(rate)))
        .collect();
    shares.sort_by(f64::total_cmp);
    let median = shares.get(shares.len() / 2).copied().unwrap_or(0.0);
    (shares.len(), median)
}

/// Writes a baresip profile into `dir`: listening on `port`, speaking
/// `input` at `rate`, recording what it hears, with one account line.
fn profile(dir: &Path, ip: &str, port: u16, rate: u32, input: &[i16], account: &str) {
    profile_with(dir, ip, port, rate, input, account, "")
}

/// [`profile`] with `extra` lines appended to baresip's config.
fn profile_with(
    dir: &Path,
    ip: &str,
    port: u16,
    rate: u32,
    input: &[i16],
    account: &str,
    extra: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    write_wav(&dir.join("in.wav"), rate, input);
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen {ip}:{port}\naudio_player none\n\
             audio_source aufile,{src}\naudio_alert none\nausrc_srate {rate}\nauplay_srate {rate}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule g722.so\nmodule aufile.so\n\
             module sndfile.so\nmodule_tmp account.so\nmodule_app contact.so\nmodule_app menu.so\n\
             snd_path {dir}\n{extra}",
            src = dir.join("in.wav").display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
    std::fs::write(dir.join("contacts"), "").unwrap();
}

/// What baresip recorded of the far end (rate, samples).
fn recording(dir: &Path, log: &str) -> (u32, Vec<i16>) {
    let dec = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("baresip recorded nothing:\n{log}"));
    read_wav(&dec)
}

/// Runs baresip for `secs` seconds, dialling `number` on the daemon with
/// `codec`, speaking `input`; returns what it heard (rate, samples).
pub fn baresip_call(
    d: &Daemon,
    number: &str,
    codec: &str,
    rate: u32,
    input: &[i16],
    secs: u32,
) -> (u32, Vec<i16>) {
    baresip_call_from(None, "127.0.0.1", d, number, codec, rate, input, secs)
}

/// `timeout`, run inside network namespace `netns` when given.
fn timeout_cmd(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "timeout"]);
            c
        }
        None => Command::new("timeout"),
    }
}

/// [`baresip_call`] from a phone at `ip`, in network namespace `netns`.
#[allow(clippy::too_many_arguments)]
pub fn baresip_call_from(
    netns: Option<&str>,
    ip: &str,
    d: &Daemon,
    number: &str,
    codec: &str,
    rate: u32,
    input: &[i16],
    secs: u32,
) -> (u32, Vec<i16>) {
    let dial = format!("sip:{number}@{}", d.sip_addr());
    baresip_dial(netns, ip, d, &dial, "", codec, rate, input, secs)
}

/// Runs baresip for `secs` seconds dialling `dial` (any SIP URI) with
/// `config` lines added to its configuration (a CA file for TLS, say).
#[allow(clippy::too_many_arguments)]
pub fn baresip_dial(
    netns: Option<&str>,
    ip: &str,
    d: &Daemon,
    dial: &str,
    config: &str,
    codec: &str,
    rate: u32,
    input: &[i16],
    secs: u32,
) -> (u32, Vec<i16>) {
    baresip_dial_as(netns, ip, d, dial, config, "", codec, rate, input, secs)
}

/// [`baresip_dial`] with `account` parameters added to the phone's
/// account line (`;mediaenc=srtp-mand`, say).
#[allow(clippy::too_many_arguments)]
pub fn baresip_dial_as(
    netns: Option<&str>,
    ip: &str,
    d: &Daemon,
    dial: &str,
    config: &str,
    account: &str,
    codec: &str,
    rate: u32,
    input: &[i16],
    secs: u32,
) -> (u32, Vec<i16>) {
    let dir = d
        .dir
        .path()
        .join(format!("baresip-{}", codec.replace('/', "-")));
    // baresip binds SIP on the port and SIP over TLS on the next one.
    let lease = super::reserved_port_pair();
    profile_with(
        &dir,
        ip,
        lease.port,
        rate,
        input,
        &format!("<sip:+14155550100@{ip}>;regint=0;audio_codecs={codec}{account}"),
        config,
    );
    let out = timeout_cmd(netns)
        .arg(format!("{}", secs + 10))
        .arg("baresip")
        .arg("-f")
        .arg(&dir)
        .arg("-e")
        .arg(format!("/dial {dial}"))
        .arg("-t")
        .arg(secs.to_string())
        .current_dir(&dir)
        .output()
        .expect("run baresip (apt package baresip-core)");
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        log.contains("Call established"),
        "baresip log:\n{log}\n{}",
        d.logs()
    );
    recording(&dir, &log)
}

/// A baresip phone that answers the calls it gets (the far end of a
/// forwarded call), for `secs` seconds.
pub struct Callee {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    /// Keeps `port` and `port + 1` from other tests while baresip runs.
    _lease: super::PortLease,
}

impl Callee {
    pub fn start(
        dir: PathBuf,
        user: &str,
        codec: &str,
        rate: u32,
        input: &[i16],
        secs: u32,
    ) -> Callee {
        Self::start_in(None, "127.0.0.1", dir, user, codec, rate, input, secs)
    }

    /// [`Callee::start`] at `ip` in network namespace `netns`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_in(
        netns: Option<&str>,
        ip: &str,
        dir: PathBuf,
        user: &str,
        codec: &str,
        rate: u32,
        input: &[i16],
        secs: u32,
    ) -> Callee {
        Self::start_as(netns, ip, dir, user, "", "", codec, rate, input, secs)
    }

    /// [`Callee::start_in`] with `account` parameters on its account line
    /// and `config` lines added to its configuration (a certificate for
    /// its TLS listener, the srtp module).
    #[allow(clippy::too_many_arguments)]
    pub fn start_as(
        netns: Option<&str>,
        ip: &str,
        dir: PathBuf,
        user: &str,
        account: &str,
        config: &str,
        codec: &str,
        rate: u32,
        input: &[i16],
        secs: u32,
    ) -> Callee {
        // baresip binds SIP on the port and SIP over TLS on the next one.
        let lease = super::reserved_port_pair();
        let port = lease.port;
        profile_with(
            &dir,
            ip,
            port,
            rate,
            input,
            &format!("<sip:{user}@{ip}>;regint=0;answermode=auto;audio_codecs={codec}{account}"),
            config,
        );
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = timeout_cmd(netns)
            .arg(format!("{}", secs + 10))
            .arg("baresip")
            .arg("-f")
            .arg(&dir)
            .arg("-t")
            .arg(secs.to_string())
            .current_dir(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run baresip (apt package baresip-core)");
        // Listening once its log says so (bounded).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < until {
            let l = std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();
            if l.contains("Populated") || l.contains("baresip is ready") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Callee {
            child: Some(child),
            dir,
            port,
            _lease: lease,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Waits for it to quit; what it heard.
    pub fn finish(mut self) -> (u32, Vec<i16>) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let log = self.log();
        recording(&self.dir, &log)
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
