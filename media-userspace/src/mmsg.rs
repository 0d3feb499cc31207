//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` on a socket's raw
//! descriptor, so a busy leg crosses into the kernel once per batch instead
//! of once per packet. Used by the userspace relay after tokio reports the
//! socket readable; both calls are non-blocking (`MSG_DONTWAIT`) and report
//! `WouldBlock` like the socket's own methods.
//!
//! Sends also use UDP segmentation offload (`UDP_SEGMENT`, Linux 4.18+):
//! a run of equal-sized datagrams to one destination (a relayed leg's
//! batch of RTP frames) goes down the stack once, and is cut into
//! datagrams by the NIC or at the end of the stack. It is used only when
//! the kernel knows the option (probed once) and for datagrams small enough
//! for any path MTU; a refusal (`EIO` or `EINVAL`: a device without
//! checksum offload before Linux 6.11, an IPsec route, no UDP checksums)
//! turns it off for the process, and the batch goes out datagram by
//! datagram, nothing lost.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room for one datagram (RTP never comes near it; larger ones are cut and
/// then refused by the RTP parser).
pub const DATAGRAM: usize = 2048;

/// Receive buffers for one batch, reused across calls.
pub struct RecvBatch {
    bufs: Vec<[u8; DATAGRAM]>,
    lens: [usize; BATCH],
    from: [SocketAddr; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; DATAGRAM]; BATCH],
            lens: [0; BATCH],
            from: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last batch, writable (the relay rewrites the
    /// payload type in place), and where it came from.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        let len = self.lens[i];
        (&mut self.bufs[i][..len], self.from[i])
    }

    /// Datagram `i` of the last batch.
    /// Datagram `i`'s whole buffer (room to grow it in place), its length
    /// and source.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize, SocketAddr) {
        (&mut self.bufs[i][..], self.lens[i], self.from[i])
    }

    /// Sets datagram `i`'s length after it was rewritten in place.
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len.min(DATAGRAM);
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Receives up to [`BATCH`] datagrams without blocking.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: all-zero is valid for these C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM,
            };
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `hdrs` points into locals or `self.bufs`,
        // which outlive the call; the kernel writes at most the given sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(DATAGRAM);
            self.from[i] = from_storage(&names[i]).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        }
        self.count = n;
        Ok(n)
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for it.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and aligned for it.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's limit of segments per send (UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Runs are made only of datagrams this small: with IP and UDP headers
/// they fit the smallest IPv6 MTU (1,280), so a path MTU never refuses a
/// segmented send and `EINVAL` means a refusal of the option itself.
const MAX_SEGMENT: usize = 1_232;
/// Whether `UDP_SEGMENT` is used: probed on the first send, cleared at the
/// kernel's first refusal.
static GSO: AtomicBool = AtomicBool::new(true);
static GSO_PROBED: std::sync::Once = std::sync::Once::new();

/// Whether the kernel knows `UDP_SEGMENT` (before 4.18 it would ignore the
/// control message and send a run as one large datagram).
fn probe_gso(fd: RawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_UDP,
            UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Sends `packets` (payload, destination); returns how many left. Runs of
/// equal-sized datagrams to one destination go as one segmented send
/// (see the module notes), the rest with one `sendmmsg(2)` per [`BATCH`].
/// Stops at the first error (a full socket buffer drops the rest, as a
/// lost datagram would).
pub fn send(fd: RawFd, packets: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    if !has_run(packets) {
        return send_each(fd, packets);
    }
    GSO_PROBED.call_once(|| {
        if !probe_gso(fd) {
            GSO.store(false, Ordering::Relaxed);
        }
    });
    if !GSO.load(Ordering::Relaxed) {
        return send_each(fd, packets);
    }
    let mut sent = 0;
    for (c, chunk) in packets.chunks(BATCH).enumerate() {
        let runs = runs(chunk);
        let mut m = 0;
        // sendmmsg reports an error only when the first message fails:
        // after a partial send, retry from where it stopped to learn why.
        let err = loop {
            match send_runs(fd, chunk, &runs[m..]) {
                Ok(n) => {
                    sent += runs[m..m + n].iter().map(|&(_, k)| k).sum::<usize>();
                    m += n;
                    if m == runs.len() || n == 0 {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if m == runs.len() {
            continue;
        }
        let (start, k) = runs[m];
        match err {
            Some(e) if k > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                // The kernel refused the segmentation: stop asking, and
                // send what is left one datagram at a time.
                GSO.store(false, Ordering::Relaxed);
                let rest = &packets[c * BATCH + start..];
                return match send_each(fd, rest) {
                    Ok(more) => Ok(sent + more),
                    Err(e) if sent == 0 => Err(e),
                    Err(_) => Ok(sent),
                };
            }
            // A full buffer or an unreachable peer: the rest is dropped.
            Some(e) if sent == 0 => return Err(e),
            _ => return Ok(sent),
        }
    }
    Ok(sent)
}

/// Whether two neighbours could share a segmented send.
fn has_run(packets: &[(&[u8], SocketAddr)]) -> bool {
    packets.windows(2).any(|w| {
        w[0].1 == w[1].1
            && w[0].0.len() == w[1].0.len()
            && (1..=MAX_SEGMENT).contains(&w[0].0.len())
    })
}

/// Where each message of a segmented batch starts and how many datagrams
/// it carries: runs of equal length to one destination, at most
/// [`MAX_SEGMENTS`] and 64 KiB each. On the stack: it is built per batch.
#[derive(Debug)]
struct Runs {
    runs: [(usize, usize); BATCH],
    len: usize,
}

impl std::ops::Deref for Runs {
    type Target = [(usize, usize)];
    fn deref(&self) -> &[(usize, usize)] {
        &self.runs[..self.len]
    }
}

/// The runs of `chunk` (at most [`BATCH`] datagrams).
fn runs(chunk: &[(&[u8], SocketAddr)]) -> Runs {
    let mut out = Runs {
        runs: [(0, 0); BATCH],
        len: 0,
    };
    for (i, (p, to)) in chunk.iter().take(BATCH).enumerate() {
        if let Some((start, n)) = out.len.checked_sub(1).map(|l| &mut out.runs[l]) {
            let (first, first_to) = chunk[*start];
            if *to == first_to
                && p.len() == first.len()
                && (1..=MAX_SEGMENT).contains(&p.len())
                && *n < MAX_SEGMENTS
                && (*n + 1) * p.len() <= 65_000
            {
                *n += 1;
                continue;
            }
        }
        out.runs[out.len] = (i, 1);
        out.len += 1;
    }
    out
}

/// One `sendmmsg(2)` of `chunk` (at most [`BATCH`] datagrams), one
/// message per run, a run of several with `UDP_SEGMENT`; how many messages
/// left.
fn send_runs(
    fd: RawFd,
    chunk: &[(&[u8], SocketAddr)],
    runs: &[(usize, usize)],
) -> io::Result<usize> {
    debug_assert!(chunk.len() <= BATCH);
    // SAFETY: all-zero is valid for these C structs.
    let mut names: [(libc::sockaddr_storage, libc::socklen_t); BATCH] = unsafe { zeroed() };
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    // One control message (a u16 segment size) per message, aligned.
    let mut cmsgs = [[0u64; 4]; BATCH];
    for (i, (p, _)) in chunk.iter().enumerate() {
        iov[i] = libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        };
    }
    let iov_p = iov.as_mut_ptr();
    for (m, &(start, n)) in runs.iter().enumerate() {
        names[m] = to_storage(chunk[start].1);
        let h = &mut hdrs[m].msg_hdr;
        h.msg_name = (&mut names[m].0 as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = names[m].1;
        // SAFETY: start + n <= chunk.len() <= BATCH: inside `iov`.
        h.msg_iov = unsafe { iov_p.add(start) };
        h.msg_iovlen = n as _;
        if n > 1 {
            // SAFETY: CMSG_SPACE only computes a size.
            let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            h.msg_control = cmsgs[m].as_mut_ptr().cast();
            h.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` bytes of `cmsgs[m]`
            // (32 bytes, more than CMSG_SPACE(2)); the header and data are
            // written inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(
                    libc::CMSG_DATA(c).cast::<u16>(),
                    chunk[start].0.len() as u16,
                );
            }
        }
    }
    // SAFETY: the headers point into `names`, `iov`, `cmsgs` and the
    // caller's packets, all alive for the call; the kernel only reads.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr(),
            runs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// [`send`] datagram by datagram (one `sendmmsg(2)` per [`BATCH`]).
fn send_each(fd: RawFd, packets: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in packets.chunks(BATCH) {
        // On the stack: a relay sends a batch per readiness, no allocation.
        // SAFETY: all-zero is valid for these C structs.
        let mut names: [(libc::sockaddr_storage, libc::socklen_t); BATCH] = unsafe { zeroed() };
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (p, to)) in chunk.iter().enumerate() {
            names[i] = to_storage(*to);
            iov[i] = libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            };
            hdrs[i].msg_hdr.msg_name = (&mut names[i].0 as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = names[i].1;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point into `names`, `iov` and the caller's
        // packets, all alive for the call; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if sent > 0 { Ok(sent) } else { Err(e) };
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + i as usize]).collect();
        let packets: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert_eq!(send(a.as_raw_fd(), &packets).unwrap(), 40);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            match batch.recv(b.as_raw_fd()) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    for i in 0..n {
                        let (p, from) = batch.get_mut(i);
                        assert_eq!(from, a.local_addr().unwrap());
                        got.push(p.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads, "all 40, in order, byte for byte");
        assert_eq!(
            batch.recv(b.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn runs_group_equal_datagrams_to_one_destination() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let (x, y, dtmf) = ([0u8; 172], [1u8; 172], [2u8; 16]);
        let p = [
            (&x[..], a),
            (&y[..], a),
            (&x[..], a),
            (&dtmf[..], a),
            (&x[..], a),
            (&x[..], b),
            (&x[..], b),
        ];
        assert_eq!(&runs(&p)[..], &[(0, 3), (3, 1), (4, 1), (5, 2)]);
        assert!(has_run(&p));
        assert!(!has_run(&p[2..5]));
        let many: Vec<(&[u8], SocketAddr)> = (0..BATCH).map(|_| (&x[..], a)).collect();
        assert_eq!(&runs(&many)[..], &[(0, BATCH)], "a whole batch in one");
        // Datagrams too large for every path MTU are sent one by one.
        let big = [3u8; 1_300];
        let large = [(&big[..], a), (&big[..], a)];
        assert_eq!(&runs(&large)[..], &[(0, 1), (1, 1)]);
        assert!(!has_run(&large));
    }

    #[test]
    fn segmented_sends_arrive_as_separate_datagrams() {
        // Loopback takes UDP_SEGMENT; a receiver without UDP_GRO gets the
        // datagrams one by one, byte for byte, in order.
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 172]).collect();
        let mut packets: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), tb)).collect();
        let dtmf = [9u8; 16];
        packets.insert(10, (&dtmf, tb));
        packets.push((&payloads[0], tc));
        let r = runs(&packets);
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(
            send_runs(a.as_raw_fd(), &packets, &r).unwrap(),
            4,
            "all four messages"
        );
        let mut batch = RecvBatch::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < 21 && std::time::Instant::now() < deadline {
            match batch.recv(b.as_raw_fd()) {
                Ok(n) => (0..n).for_each(|i| got.push(batch.get_mut(i).0.to_vec())),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let want: Vec<Vec<u8>> = packets[..21].iter().map(|(p, _)| p.to_vec()).collect();
        assert_eq!(got, want);
        c.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(c.recv(&mut buf).unwrap(), 172);
    }

    #[test]
    fn a_refused_segmentation_falls_back_to_single_datagrams_and_stays_off() {
        // Without UDP checksums (SO_NO_CHECK) the kernel refuses
        // UDP_SEGMENT, as it does on a device without checksum offload.
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int we own.
        let rc = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 172]).collect();
        let packets: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert!(GSO.load(Ordering::Relaxed));
        assert_eq!(send(a.as_raw_fd(), &packets).unwrap(), 8, "none lost");
        assert!(!GSO.load(Ordering::Relaxed), "not asked for again");
        b.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for p in &payloads {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &p[..]);
        }
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let Ok(a) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback in this environment
        };
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let to = b.local_addr().unwrap();
        assert_eq!(send(a.as_raw_fd(), &[(b"x", to)]).unwrap(), 1);
        b.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut batch = RecvBatch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while batch.recv(b.as_raw_fd()).unwrap_or(0) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.get_mut(0).1, a.local_addr().unwrap());
    }
}
