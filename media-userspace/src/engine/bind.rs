//! Binding RTP and RTCP sockets on the engine's port range.

use super::*;

pub(super) fn bind_rtcp_socket(shared: &Shared, rtp_port: u16) -> Option<std::net::UdpSocket> {
    let addr = SocketAddr::new(shared.cfg.bind_ip, rtp_port.checked_add(1)?);
    match std::net::UdpSocket::bind(addr) {
        Ok(s) if s.set_nonblocking(true).is_ok() => Some(s),
        Ok(_) => None,
        Err(e) => {
            shared.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, error = %e, "RTCP port busy; leg runs without RTCP");
            None
        }
    }
}

/// Binds an RTP socket on a free port of the range.
pub(super) fn bind_leg_socket(shared: &Shared) -> Option<(std::net::UdpSocket, u16)> {
    for _ in 0..BIND_ATTEMPTS {
        let port = shared.ports.lock().ok()?.allocate()?;
        let addr = SocketAddr::new(shared.cfg.bind_ip, port);
        match std::net::UdpSocket::bind(addr) {
            Ok(s) => {
                if s.set_nonblocking(true).is_ok() {
                    return Some((s, port));
                }
            }
            Err(e) => {
                shared.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%addr, error = %e, "RTP port busy, trying another");
            }
        }
        // Busy ports go to the back of the queue.
        if let Ok(mut p) = shared.ports.lock() {
            p.release(port);
        }
    }
    None
}

pub(super) fn release_port(shared: &Shared, port: u16) {
    if let Ok(mut p) = shared.ports.lock() {
        p.release(port);
    }
}
