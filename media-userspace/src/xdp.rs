//! Loader for the XDP relay fast path (`media-ebpf/xdp`).
//!
//! The program is optional: `build.rs` embeds it only when the eBPF
//! toolchain was available, and every failure here (not built in, no
//! privileges, verifier, driver) is a typed [`XdpError`] the caller answers
//! by relaying in userspace. Rules and counters use the shared types of
//! [`media_common`]; see there for byte order.
//!
//! [`crate::offload`] decides which relay pairs run here.

use std::io;
use std::path::Path;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues},
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
pub use media_common::{
    FAMILY_V4, FLAG_CHECK_PEER, FLAG_DROP, FLAG_IPV6, FLAG_REDIRECT, FLAG_ZERO_UDP_CSUM,
    FLAGS_KNOWN, LEG_COUNTERS, LegCounters, PROGRAM_NAME, RELAY_RULES, RelayKey, RelayRule,
};

/// `XDP_DROP`: the frame is dropped (rules with [`FLAG_DROP`]).
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`: hand the frame to the kernel stack.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`: send the (rewritten) frame back out of the receiving interface.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`: `bpf_redirect` to another interface succeeded.
pub const XDP_REDIRECT: u32 = 4;

/// The embedded program, or `None` when it was not built into this binary
/// (no bpf-linker / nightly at build time; see [`build_info`]).
pub fn program_bytes() -> Option<&'static [u8]> {
    let bytes: &'static [u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/media_xdp.bpf.o"));
    (!bytes.is_empty()).then_some(bytes)
}

/// How the build went: "media-xdp built with <toolchain>" or
/// "not built: <reason>".
pub const fn build_info() -> &'static str {
    env!("MEDIA_XDP_BUILD")
}

/// Where the program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver (native) mode only; fail if the driver lacks XDP support.
    Native,
    /// Generic (SKB) mode only: works everywhere, much slower.
    Generic,
    /// Native, falling back to generic if the driver refuses.
    #[default]
    NativeOrGeneric,
}

/// Why the offload is unavailable or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No toolchain when this binary was built.
    #[error("XDP program not built into this binary ({})", build_info())]
    NotBuilt,
    /// The kernel refused for lack of privileges (CAP_BPF / CAP_NET_ADMIN).
    #[error("not permitted to load or attach XDP programs ({context}): {source}")]
    Permission {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    /// Parsing, relocating or creating maps for the object failed.
    #[error("loading the XDP object failed: {0}")]
    Load(#[source] EbpfError),
    /// The verifier or `BPF_PROG_LOAD` rejected the program.
    #[error("loading the XDP program failed: {0}")]
    Program(#[source] ProgramError),
    /// The object lacks a map or program this loader expects.
    #[error("XDP object has no {0}")]
    Missing(&'static str),
    /// No such network interface.
    #[error("unknown network interface {0:?}")]
    UnknownInterface(String),
    /// Attaching to the interface failed in every allowed mode.
    #[error("attaching XDP to {iface} ({mode:?}) failed: {source}")]
    Attach {
        iface: String,
        mode: XdpMode,
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("XDP map operation failed: {0}")]
    Map(#[source] MapError),
    /// The fast path cannot handle this rule (IPv6, unknown flags).
    #[error("rule not supported by the XDP fast path: {0}")]
    Unsupported(&'static str),
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] ProgramError),
    /// Pinning in bpffs failed (no bpffs at the directory, a stale pin of
    /// another kind, or an XDP attachment without bpf_link, before 5.9).
    #[error("pinning the XDP offload in {dir} failed: {why}")]
    Pin { dir: String, why: String },
}

/// The first `io::Error` in `err`'s source chain, if it is EPERM/EACCES.
fn permission_error(err: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                .then(|| io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(0)));
        }
        cur = e.source();
    }
    None
}

/// Where the program ended up after [`XdpOffload::attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

/// Outcome of [`XdpOffload::test_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_PASS`, `XDP_TX`, ...).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
}

/// Names in a pin directory ([`XdpOffload::load_pinned`]).
const PIN_RULES: &str = "relay_rules";
const PIN_COUNTERS: &str = "leg_counters";
const PIN_LINK_PREFIX: &str = "link_";

/// The relay program of a loaded object.
fn relay_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(XdpError::Missing("program `relay`"))?
        .try_into()
        .map_err(XdpError::Program)
}

/// Whether `dir` is on a bpffs mount (where pins can live).
fn is_bpffs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed statfs to fill.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The loaded relay program and its maps. Dropping it detaches the program
/// and frees the maps, unless they are pinned ([`Self::load_pinned`],
/// [`Self::attach_pinned`]): then they stay for the next run.
pub struct XdpOffload {
    ebpf: Ebpf,
    rules: HashMap<MapData, RelayKey, RelayRule>,
    counters: PerCpuHashMap<MapData, RelayKey, LegCounters>,
    sip: crate::xdp_sip::SipGuardMaps,
    attached: Vec<(String, Attached)>,
    /// Links [`Self::attach`] made, newest last.
    link_ids: Vec<aya::programs::xdp::XdpLinkId>,
}

impl std::fmt::Debug for XdpOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpOffload")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

impl XdpOffload {
    /// Loads the program and attaches it to `iface`.
    pub fn load(iface: &str, mode: XdpMode) -> Result<Self, XdpError> {
        let mut offload = Self::load_detached()?;
        offload.attach(iface, mode)?;
        Ok(offload)
    }

    /// Loads the program and creates its maps without attaching it (for
    /// [`Self::test_run`], or to fill rules before [`Self::attach`]).
    pub fn load_detached() -> Result<Self, XdpError> {
        Self::load_with(&mut EbpfLoader::new())
    }

    /// Loads the program with its maps pinned in `dir`, a directory on a
    /// bpffs mount: maps a previous run pinned there are taken over with
    /// their rules and counters, so relayed legs the kernel was forwarding
    /// go on being forwarded. Attach with [`Self::attach_pinned`].
    pub fn load_pinned(dir: &Path) -> Result<Self, XdpError> {
        let pin_err = |why: String| XdpError::Pin {
            dir: dir.display().to_string(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| pin_err(e.to_string()))?;
        if !is_bpffs(dir) {
            return Err(pin_err(
                "not on a bpffs mount (mount -t bpf bpf <dir>)".into(),
            ));
        }
        Self::load_with(
            EbpfLoader::new()
                .map_pin_path(RELAY_RULES, dir.join(PIN_RULES))
                .map_pin_path(LEG_COUNTERS, dir.join(PIN_COUNTERS)),
        )
    }

    fn load_with(loader: &mut EbpfLoader<'_>) -> Result<Self, XdpError> {
        let bytes = program_bytes().ok_or(XdpError::NotBuilt)?;
        let mut ebpf = loader.load(bytes).map_err(|e| match permission_error(&e) {
            Some(source) => XdpError::Permission {
                context: "creating maps",
                source,
            },
            None => XdpError::Load(e),
        })?;
        let prog = relay_program(&mut ebpf)?;
        prog.load().map_err(|e| match permission_error(&e) {
            Some(source) => XdpError::Permission {
                context: "loading the program",
                source,
            },
            None => XdpError::Program(e),
        })?;
        let rules = ebpf
            .take_map(RELAY_RULES)
            .ok_or(XdpError::Missing("map RELAY_RULES"))?;
        let rules = HashMap::try_from(rules).map_err(XdpError::Map)?;
        let counters = ebpf
            .take_map(LEG_COUNTERS)
            .ok_or(XdpError::Missing("map LEG_COUNTERS"))?;
        let counters = PerCpuHashMap::try_from(counters).map_err(XdpError::Map)?;
        let sip = crate::xdp_sip::SipGuardMaps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            rules,
            counters,
            sip,
            attached: Vec::new(),
            link_ids: Vec::new(),
        })
    }

    fn program(&self) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(XdpError::Missing("program `relay`"))?
            .try_into()
            .map_err(XdpError::Program)
    }

    /// The kernel's id of the loaded program (for `bpftool prog show id`).
    pub fn program_id(&self) -> Option<u32> {
        self.program().ok()?.info().ok().map(|i| i.id())
    }

    /// Attaches to `iface`; native first when `mode` allows it.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<Attached, XdpError> {
        let prog = relay_program(&mut self.ebpf)?;
        let attempts: &[(AyaXdpMode, Attached)] = match mode {
            XdpMode::Native => &[(AyaXdpMode::Driver, Attached::Native)],
            XdpMode::Generic => &[(AyaXdpMode::Skb, Attached::Generic)],
            XdpMode::NativeOrGeneric => &[
                (AyaXdpMode::Driver, Attached::Native),
                (AyaXdpMode::Skb, Attached::Generic),
            ],
        };
        let mut last = None;
        for &(aya_mode, attached) in attempts {
            match prog.attach(iface, aya_mode) {
                Ok(link) => {
                    // The link is owned by the program: detached on drop.
                    self.attached.push((iface.to_owned(), attached));
                    self.link_ids.push(link);
                    return Ok(attached);
                }
                Err(ProgramError::UnknownInterface { name }) => {
                    return Err(XdpError::UnknownInterface(name));
                }
                Err(e) => {
                    if let Some(source) = permission_error(&e) {
                        return Err(XdpError::Permission {
                            context: "attaching",
                            source,
                        });
                    }
                    last = Some(e);
                }
            }
        }
        Err(XdpError::Attach {
            iface: iface.to_owned(),
            mode,
            source: last.unwrap_or(ProgramError::NotAttached),
        })
    }

    /// Attaches to `iface` through a bpf_link pinned in `dir` (next to the
    /// maps of [`Self::load_pinned`]), so the program stays attached when
    /// this process exits. A link a previous run pinned for `iface` is
    /// taken over and its program replaced by this one atomically
    /// (`BPF_LINK_UPDATE`: no frame meets no program); otherwise a new
    /// link is made (native first when `mode` allows) and pinned.
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        mode: XdpMode,
        dir: &Path,
    ) -> Result<Attached, XdpError> {
        let pin_err = |why: String| XdpError::Pin {
            dir: dir.display().to_string(),
            why,
        };
        // bpffs holds only BPF objects: the mode is in the pin's name.
        let link_path = |a: Attached| {
            let mode = match a {
                Attached::Native => "native",
                Attached::Generic => "generic",
            };
            dir.join(format!("{PIN_LINK_PREFIX}{mode}_{iface}"))
        };
        let pinned = [Attached::Native, Attached::Generic]
            .into_iter()
            .find(|&a| link_path(a).exists());
        if let Some(attached) = pinned {
            let link_path = link_path(attached);
            let fd: FdLink = PinnedLink::from_pin(&link_path)
                .map_err(|e| pin_err(format!("{}: {e}", link_path.display())))?
                .into();
            let link = XdpLink::try_from(fd).map_err(|e| pin_err(e.to_string()))?;
            let prog = relay_program(&mut self.ebpf)?;
            prog.attach_to_link(link)
                .map_err(|e| pin_err(format!("replacing the program: {e}")))?;
            self.attached.push((iface.to_owned(), attached));
            return Ok(attached);
        }
        let attached = self.attach(iface, mode)?;
        let prog = relay_program(&mut self.ebpf)?;
        let id = prog
            .take_link(self.link_ids.pop().ok_or(XdpError::Missing("link"))?)
            .map_err(XdpError::Program)?;
        let fd = FdLink::try_from(id)
            .map_err(|e| pin_err(format!("no bpf_link for XDP (Linux 5.9+ needed): {e}")))?;
        // The pin holds the link; this process's descriptor may close.
        fd.pin(link_path(attached))
            .map_err(|e| pin_err(e.to_string()))?;
        Ok(attached)
    }

    /// Removes every pin in `dir` (links, maps): the program detaches and
    /// the maps go once no process holds them any more.
    pub fn unpin(dir: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(PIN_LINK_PREFIX) || name == PIN_RULES || name == PIN_COUNTERS {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Every rule in the map (a restart takes over the ones a previous run
    /// left).
    pub fn rules(&self) -> Vec<(RelayKey, RelayRule)> {
        self.rules.iter().filter_map(Result::ok).collect()
    }

    /// Interface and mode the program was last attached in, if any.
    pub fn attached(&self) -> Option<(&str, Attached)> {
        self.attached.last().map(|(i, m)| (i.as_str(), *m))
    }

    /// Every interface the program is attached to, with its mode.
    pub fn interfaces(&self) -> &[(String, Attached)] {
        &self.attached
    }

    /// The SIP guard's maps (off until enabled).
    pub fn sip_guard(&mut self) -> &mut crate::xdp_sip::SipGuardMaps {
        &mut self.sip
    }

    /// Installs (or replaces) the rule for `key`. Its counters start at
    /// zero for a new leg and are kept when a rule is replaced.
    pub fn insert_rule(&mut self, key: RelayKey, rule: RelayRule) -> Result<(), XdpError> {
        if key.family != FAMILY_V4 || media_common::ipv4_unmapped(&key.local_ip).is_none() {
            return Err(XdpError::Unsupported("only IPv4 keys"));
        }
        if rule.flags & FLAG_IPV6 != 0
            || media_common::ipv4_unmapped(&rule.remote_ip).is_none()
            || media_common::ipv4_unmapped(&rule.src_ip).is_none()
        {
            return Err(XdpError::Unsupported("only IPv4 rewrites"));
        }
        if rule.flags & !FLAGS_KNOWN != 0 {
            return Err(XdpError::Unsupported("unknown flags"));
        }
        let key = RelayKey { _pad: 0, ..key };
        let zero = vec![LegCounters::default(); nr_cpus()?];
        let zero = PerCpuValues::try_from(zero).map_err(|e| XdpError::Map(MapError::from(e)))?;
        // BPF_NOEXIST: keep the counters of a leg whose rule is replaced.
        const BPF_NOEXIST: u64 = 1;
        match self.counters.insert(key, zero, BPF_NOEXIST) {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => return Err(XdpError::Map(e)),
        }
        self.rules.insert(key, rule, 0).map_err(XdpError::Map)
    }

    /// Removes the rule for `key` and returns the leg's final counters
    /// (`None` if there was no such leg).
    pub fn remove_rule(&mut self, key: &RelayKey) -> Result<Option<LegCounters>, XdpError> {
        let had_rule = match self.rules.remove(key) {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(e) if is_errno(&e, libc::ENOENT) => false,
            Err(e) => return Err(XdpError::Map(e)),
        };
        let last = self.counters(key)?;
        match self.counters.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) if is_errno(&e, libc::ENOENT) => {}
            Err(e) => return Err(XdpError::Map(e)),
        }
        Ok(if had_rule || last.is_some() {
            Some(last.unwrap_or_default())
        } else {
            None
        })
    }

    /// The leg's counters summed over CPUs (`None` if there is no such leg).
    pub fn counters(&self, key: &RelayKey) -> Result<Option<LegCounters>, XdpError> {
        match self.counters.get(key, 0) {
            Ok(per_cpu) => Ok(Some(
                per_cpu
                    .iter()
                    .fold(LegCounters::default(), |acc, c| acc.merge(*c)),
            )),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(XdpError::Map(e)),
        }
    }

    /// The rule installed for `key`, if any.
    pub fn rule(&self, key: &RelayKey) -> Result<Option<RelayRule>, XdpError> {
        match self.rules.get(key, 0) {
            Ok(rule) => Ok(Some(rule)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(XdpError::Map(e)),
        }
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (works
    /// detached; uses and updates the real maps).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutput, XdpError> {
        let prog = self.program()?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(XdpError::TestRun)?;
        out.truncate(res.data_size_out as usize);
        Ok(TestRunOutput {
            action: res.return_value,
            frame: out,
        })
    }
}

fn is_errno(e: &MapError, errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error() == Some(errno);
        }
        cur = err.source();
    }
    false
}

fn nr_cpus() -> Result<usize, XdpError> {
    aya::util::nr_cpus().map_err(|(_, e)| XdpError::Map(MapError::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_matches_embedding() {
        assert_eq!(
            program_bytes().is_some(),
            build_info().starts_with("media-xdp built"),
            "{}",
            build_info()
        );
    }

    #[test]
    fn not_built_error_says_so() {
        let msg = XdpError::NotBuilt.to_string();
        assert!(msg.starts_with("XDP program not built into this binary"));
    }
}
