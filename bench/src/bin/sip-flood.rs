//! A spoofed-source SIP flood for the XDP SIP guard's benchmark: IPv4/UDP
//! OPTIONS frames from random source addresses in 198.19.0.0/16, written
//! with an AF_PACKET socket on an interface of a network namespace the
//! benchmark created, paced in 1 ms ticks, bounded in count and time.
//!
//!   sip-flood IFACE DST_MAC DST_IP DST_PORT PPS SECONDS [SOURCES [FIRST]]
//!
//! SOURCES (default 65,536, at most that) spoofed addresses take turns,
//! from the FIRST-th (default 0) of 198.19.0.0/16 on.
//!
//! Prints `sent=N secs=S pps=P`.

use std::time::{Duration, Instant};

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn frame(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], port: u16, n: u32) -> Vec<u8> {
    let payload = format!(
        "OPTIONS sip:{}.{}.{}.{} SIP/2.0\r\nVia: SIP/2.0/UDP {}.{}.{}.{}:5060;branch=z9hG4bKf{n}\r\nFrom: <sip:f@x>;tag={n}\r\nTo: <sip:g@x>\r\nCall-ID: f{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        dst[0], dst[1], dst[2], dst[3], src[0], src[1], src[2], src[3]
    );
    let udp_len = 8 + payload.len();
    let tot = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + tot);
    f.extend(dst_mac);
    f.extend([0x02, 0, 0, 0, 0xf1, 0x00]);
    f.extend(0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend((tot as u16).to_be_bytes());
    ip.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend(5060u16.to_be_bytes());
    f.extend(port.to_be_bytes());
    f.extend((udp_len as u16).to_be_bytes());
    // No UDP checksum (allowed over IPv4).
    f.extend([0, 0]);
    f.extend(payload.as_bytes());
    f
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if !(7..=9).contains(&a.len()) {
        eprintln!("usage: sip-flood IFACE DST_MAC DST_IP DST_PORT PPS SECONDS [SOURCES [FIRST]]");
        std::process::exit(2);
    }
    let mac: Vec<u8> = a[2]
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("MAC"))
        .collect();
    let dst_mac: [u8; 6] = mac.try_into().expect("MAC of 6 bytes");
    let dst: std::net::Ipv4Addr = a[3].parse().expect("IPv4");
    let port: u16 = a[4].parse().expect("port");
    let pps: u64 = a[5].parse().expect("pps");
    let secs: u64 = a[6].parse::<u64>().expect("seconds").min(120);
    let sources: u32 = a
        .get(7)
        .map(|s| s.parse().expect("sources"))
        .unwrap_or(65_536)
        .clamp(1, 65_536);
    let first: u32 = a
        .get(8)
        .map(|s| s.parse().expect("first source"))
        .unwrap_or(0)
        .min(65_536 - sources);
    // The spoofed sources' frames, built once.
    let frames: Vec<Vec<u8>> = (first..first + sources)
        .map(|i| {
            let src = [198, 19, (i >> 8) as u8, i as u8];
            frame(dst_mac, src, dst.octets(), port, i)
        })
        .collect();
    let iface = std::ffi::CString::new(a[1].as_str()).expect("iface");
    // SAFETY: plain socket syscalls on values we own; the sockaddr_ll is
    // fully initialised before bind and sendto read it.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
    assert!(ifindex > 0, "no interface {}", a[1]);
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let per_tick = pps.div_ceil(1000).max(1);
    let mut sent: u64 = 0;
    let mut i = 0usize;
    let mut tick = start;
    // The socket is bound, so batches need no address.
    // SAFETY: sll is a valid, fully initialised sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    const BATCH: usize = 64;
    while Instant::now() < end && sent < pps * secs {
        let mut left = per_tick as usize;
        while left > 0 {
            let n = left.min(BATCH);
            let mut iov: Vec<libc::iovec> = (0..n)
                .map(|k| {
                    let f = &frames[(i + k) % frames.len()];
                    libc::iovec {
                        iov_base: f.as_ptr() as *mut libc::c_void,
                        iov_len: f.len(),
                    }
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: a zeroed mmsghdr is valid; it points at one
                    // iovec that outlives the call.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = v;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            // SAFETY: msgs holds n initialised headers.
            let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
            if r > 0 {
                sent += r as u64;
                i += r as usize;
            } else {
                i += n;
            }
            left -= n;
        }
        tick += Duration::from_millis(1);
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        }
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} secs={took:.2} pps={:.0}",
        sent as f64 / took.max(1e-9)
    );
}
