//! Test networks: namespaces and veth pairs that integration tests create
//! (and remove) to run the gateway between a caller host and a far host,
//! with real routing, ARP and XDP in driver mode. Test support only
//! (feature `test-netns`); needs root and iproute2/ethtool.
//!
//! Addresses are from 198.18.0.0/15 (RFC 2544 benchmarking): the caller
//! 198.18.0.2 — 198.18.0.1 (`gc`) gateway (`gf`) 198.18.1.1 — 198.18.1.2
//! far host.

use std::os::fd::AsRawFd;
use std::process::Command;

pub const GW_C: &str = "198.18.0.1";
pub const CALLER: &str = "198.18.0.2";
pub const GW_F: &str = "198.18.1.1";
pub const FAR: &str = "198.18.1.2";

/// Runs `f` on a thread inside network namespace `ns` (as made by
/// `ip netns add`): sockets and threads made there stay there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns changes only this thread's network namespace.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Runs a command and panics with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces: caller (c0) — (gc) gateway (gf) — (f0) far.
pub struct Topology {
    pub ns: [String; 3],
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let id = std::process::id() % 100_000;
        let ns = [
            format!("gx{id}{tag}c"),
            format!("gx{id}{tag}g"),
            format!("gx{id}{tag}f"),
        ];
        for n in &ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&["ip", "netns", "add", n]);
        }
        let [c, g, f] = [&ns[0], &ns[1], &ns[2]];
        sh(&[
            "ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "gc", "netns", g,
        ]);
        sh(&[
            "ip", "link", "add", "f0", "netns", f, "type", "veth", "peer", "name", "gf", "netns", g,
        ]);
        for (n, dev, addr) in [
            (c, "c0", "198.18.0.2/24"),
            (g, "gc", "198.18.0.1/24"),
            (g, "gf", "198.18.1.1/24"),
            (f, "f0", "198.18.1.2/24"),
        ] {
            sh(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", n, "link", "set", dev, "up"]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", c, "route", "add", "default", "via", GW_C]);
        sh(&["ip", "-n", f, "route", "add", "default", "via", GW_F]);
        // Frames leave the senders with full checksums: the program
        // updates them incrementally (a partial one would stay wrong).
        for (n, dev) in [(c, "c0"), (f, "f0"), (g, "gc"), (g, "gf")] {
            sh(&["ip", "netns", "exec", n, "ethtool", "-K", dev, "tx", "off"]);
        }
        Topology { ns }
    }

    /// Runs `f` on a thread inside namespace `i` (0 caller, 1 gateway,
    /// 2 far). Sockets and threads made there stay there.
    pub fn run<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.ns[i], f)
    }

    /// `ip netns exec <namespace i>`: prefix for a process run there.
    pub fn exec(&self, i: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i]]);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}
