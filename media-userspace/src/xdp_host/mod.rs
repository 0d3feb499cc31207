//! The XDP fast path on this host: whether it runs, and where.
//!
//! [`setup`] follows the operator's [`XdpSetting`]: it loads the program
//! (pinned in a bpffs directory when one is given, so the kernel goes on
//! forwarding offloaded legs while the daemon restarts), attaches it to
//! the interfaces that carry media (driver mode, falling back to generic)
//! and answers with an [`Outcome`]. Every failure is an [`Unavailable`]
//! reason: under [`XdpSetting::Auto`] media is relayed in userspace with
//! one warning, under [`XdpSetting::On`] start-up fails
//! ([`RequiredUnavailable`]). A run that does not take the pins over
//! removes them. [`capabilities`] raises the privileges all this needs.

pub mod capabilities;
mod routes;

pub use routes::media_interfaces;

use crate::offload::XdpPath;
use crate::xdp::{XdpError, XdpMode, XdpOffload, program_bytes};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether relayed media may run in the kernel (`media.xdp`: `"auto"`,
/// `"on"` or `"off"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpSetting {
    /// Attach when the host allows it, else relay in userspace.
    #[default]
    Auto,
    /// Attach or refuse to start.
    On,
    /// Never attach.
    Off,
}

/// What [`setup`] works with.
#[derive(Clone, Debug)]
pub struct HostSetup {
    pub setting: XdpSetting,
    /// The media sockets' address: with no `interfaces`, the program goes
    /// on the interfaces whose routes cover it ([`media_interfaces`]).
    pub bind_ip: IpAddr,
    /// Interfaces to attach to (empty: found from `bind_ip`).
    pub interfaces: Vec<String>,
    /// Interfaces attached to as well (where SIP arrives on another NIC,
    /// for the SIP guard).
    pub extra_interfaces: Vec<String>,
    /// A directory on a bpffs mount for the pins (`None`: not pinned).
    pub pin_dir: Option<PathBuf>,
    /// The address peers send RTP to: rules are keyed on it.
    pub local_ip: IpAddr,
    /// Relayed UDP leaves with a zero checksum instead of an updated one.
    pub zero_udp_checksum: bool,
}

/// How [`setup`] went, when start-up may go on.
#[derive(Debug)]
pub enum Outcome {
    /// The program is attached: the path the media workers offload to.
    Attached(Arc<XdpPath>),
    /// [`XdpSetting::Off`]: relayed media in userspace.
    Off,
    /// [`XdpSetting::Auto`] on a host that cannot: relayed media in
    /// userspace, for this reason (logged once).
    Unavailable(Unavailable),
}

/// Why the fast path cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "the XDP program is not built into this binary (scripts/setup.sh test installs bpf-linker and the pinned nightly)"
    )]
    NotBuilt,
    #[error(
        "no interface carries media address {0} (loopback stays in userspace; set media.xdp_interfaces)"
    )]
    NoInterface(IpAddr),
    /// The program or its maps did not load (privileges, verifier).
    #[error(transparent)]
    Load(XdpError),
    /// It did not attach to an interface (privileges, driver, unknown
    /// interface).
    #[error(transparent)]
    Attach(XdpError),
}

/// [`XdpSetting::On`] on a host that cannot: start-up fails.
#[derive(Debug, thiserror::Error)]
#[error("media.xdp = \"on\": {0}")]
pub struct RequiredUnavailable(pub Unavailable);

/// Sets the fast path up as `s` asks; see the module's documentation.
pub fn setup(s: &HostSetup) -> Result<Outcome, RequiredUnavailable> {
    if s.setting == XdpSetting::Off {
        tracing::info!("XDP offload disabled by media.xdp = \"off\"; relayed media in userspace");
        release_stale_pins(s.pin_dir.as_deref());
        return Ok(Outcome::Off);
    }
    match attach(s) {
        Ok(path) => Ok(Outcome::Attached(Arc::new(path))),
        Err(why) => {
            release_stale_pins(s.pin_dir.as_deref());
            if s.setting == XdpSetting::On {
                return Err(RequiredUnavailable(why));
            }
            tracing::warn!("XDP offload unavailable ({why}); relayed media in userspace");
            Ok(Outcome::Unavailable(why))
        }
    }
}

/// Loads the program and attaches it to every interface of `s`.
fn attach(s: &HostSetup) -> Result<XdpPath, Unavailable> {
    if program_bytes().is_none() {
        return Err(Unavailable::NotBuilt);
    }
    let interfaces = s.attach_to();
    if interfaces.is_empty() {
        return Err(Unavailable::NoInterface(s.bind_ip));
    }
    let (mut offload, pin) = load(s.pin_dir.as_deref())?;
    for i in &interfaces {
        attach_one(&mut offload, i, pin)?;
    }
    Ok(XdpPath::new(offload, Some(s.local_ip), s.zero_udp_checksum))
}

impl HostSetup {
    /// The interfaces the program goes on.
    fn attach_to(&self) -> Vec<String> {
        let mut interfaces = if self.interfaces.is_empty() {
            media_interfaces(self.bind_ip)
        } else {
            self.interfaces.clone()
        };
        for i in &self.extra_interfaces {
            if !interfaces.contains(i) {
                interfaces.push(i.clone());
            }
        }
        interfaces
    }
}

/// Loads the program, pinned in `dir` when given; where it is pinned.
/// Pinned, the program, its links and maps outlive this process and the
/// next run takes them over. Without a bpffs there, it still runs,
/// unpinned.
fn load(dir: Option<&Path>) -> Result<(XdpOffload, Option<&Path>), Unavailable> {
    let Some(dir) = dir else {
        return Ok((
            XdpOffload::load_detached().map_err(Unavailable::Load)?,
            None,
        ));
    };
    match XdpOffload::load_pinned(dir) {
        Ok(offload) => Ok((offload, Some(dir))),
        Err(e) => {
            tracing::warn!("XDP offload not pinned, so it will not survive a restart: {e}");
            release_stale_pins(Some(dir));
            Ok((
                XdpOffload::load_detached().map_err(Unavailable::Load)?,
                None,
            ))
        }
    }
}

/// Attaches to `iface` (natively when the driver can), its link pinned in
/// `pin` when it can be.
fn attach_one(
    offload: &mut XdpOffload,
    iface: &str,
    pin: Option<&Path>,
) -> Result<(), Unavailable> {
    let attached = match pin {
        Some(dir) => offload
            .attach_pinned(iface, XdpMode::NativeOrGeneric, dir)
            .or_else(|e| {
                tracing::warn!(interface = %iface, "XDP link not pinned: {e}");
                offload.attach(iface, XdpMode::NativeOrGeneric)
            }),
        None => offload.attach(iface, XdpMode::NativeOrGeneric),
    }
    .map_err(Unavailable::Attach)?;
    tracing::info!(interface = %iface, mode = ?attached, pinned = pin.is_some(), "XDP fast path attached");
    Ok(())
}

/// Removes what a previous run pinned in `dir`, for a run that does not
/// take the pinned offload over: its program would stay attached (and its
/// interfaces busy) and its rules would go on forwarding old calls.
pub fn release_stale_pins(dir: Option<&Path>) {
    let Some(dir) = dir.filter(|d| d.exists()) else {
        return;
    };
    let shown = dir.to_string_lossy();
    match XdpOffload::unpin(dir) {
        Ok(()) => tracing::info!(dir = &*shown, "removed the XDP pins a previous run left"),
        Err(e) => {
            tracing::warn!(dir = &*shown, error = %e, "could not remove the XDP pins a previous run left")
        }
    }
}
