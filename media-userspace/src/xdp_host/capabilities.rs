//! The capabilities the XDP path needs (CAP_BPF, CAP_NET_ADMIN,
//! CAP_PERFMON), raised from the permitted set into the effective one at
//! start (capget/capset; capabilities are per thread, so before any thread
//! starts).
//!
//! A container that runs as a non-root user gets the capabilities it adds
//! (`docker run --cap-add`, a pod's `capabilities.add`) only in its bounding
//! set: across `execve` the kernel gives a non-root process none unless the
//! binary carries file capabilities. The image's binary carries the three
//! as *permitted only* (`setcap …+p`, no effective bit), so where they are
//! granted the process holds them permitted and raises them here; where
//! they are not, `execve` still succeeds (an effective bit would make it
//! fail) and media runs in userspace: the offload fails open.

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

/// The capabilities the XDP program's load, attach and maps need.
pub const XDP_CAPABILITIES: [(u32, &str); 3] =
    [(12, "CAP_NET_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF")];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> std::io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: with version 3, capget reads the header and writes two
    // CapData words, which `data` holds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}

/// Which of [`XDP_CAPABILITIES`] the process holds: (permitted, effective).
pub fn xdp_capabilities() -> std::io::Result<Vec<(&'static str, bool, bool)>> {
    let data = capget()?;
    Ok(XDP_CAPABILITIES
        .iter()
        .map(|&(cap, name)| {
            let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
            (
                name,
                data[word].permitted & bit != 0,
                data[word].effective & bit != 0,
            )
        })
        .collect())
}

/// Makes effective each of [`XDP_CAPABILITIES`] that is permitted but not
/// effective; returns the names raised (none when the process already has
/// them, as root does, or was not granted them).
pub fn raise_xdp_capabilities() -> std::io::Result<Vec<&'static str>> {
    let mut data = capget()?;
    let mut raised = Vec::new();
    for &(cap, name) in &XDP_CAPABILITIES {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        if data[word].permitted & bit != 0 && data[word].effective & bit == 0 {
            data[word].effective |= bit;
            raised.push(name);
        }
    }
    if raised.is_empty() {
        return Ok(raised);
    }
    let mut header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: with version 3, capset reads the header and two CapData
    // words from `data`; effective stays within permitted.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_idempotent_and_never_exceeds_the_permitted_set() {
        let before = xdp_capabilities().unwrap();
        raise_xdp_capabilities().unwrap();
        let after = xdp_capabilities().unwrap();
        for ((name, permitted, _), (_, permitted_after, effective_after)) in
            before.iter().zip(&after)
        {
            assert_eq!(permitted, permitted_after, "{name}");
            assert_eq!(effective_after, permitted, "{name} effective iff permitted");
        }
        assert!(raise_xdp_capabilities().unwrap().is_empty());
    }
}
