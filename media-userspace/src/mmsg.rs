//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` on a socket's raw
//! descriptor, so a busy leg crosses into the kernel once per batch instead
//! of once per packet. Used by the userspace relay after tokio reports the
//! socket readable; both calls are non-blocking (`MSG_DONTWAIT`) and report
//! `WouldBlock` like the socket's own methods.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

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

/// Sends `packets` (payload, destination) with one `sendmmsg(2)` per
/// [`BATCH`]; returns how many left. Stops at the first error (a full
/// socket buffer drops the rest, as a lost datagram would).
pub fn send(fd: RawFd, packets: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
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
