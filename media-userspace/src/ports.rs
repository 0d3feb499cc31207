//! RTP port allocation: even ports for RTP, the next odd one for RTCP
//! (RFC 3550 §11). Sans-IO: binding happens at the edge, which returns
//! ports it could not bind.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct PortAllocator {
    free: VecDeque<u16>,
    in_use: usize,
}

impl PortAllocator {
    /// Ports `min..=max`; `min` is rounded up to even. Ports are handed out
    /// least recently used first, so a port is not reused while late
    /// packets of its previous call may still arrive.
    pub fn new(min: u16, max: u16) -> PortAllocator {
        let start = min + (min % 2);
        let free = (start..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|rtcp| rtcp <= max))
            .collect();
        PortAllocator { free, in_use: 0 }
    }

    /// The next RTP port (RTCP is `port + 1`).
    pub fn allocate(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.in_use += 1;
        Some(p)
    }

    pub fn release(&mut self, port: u16) {
        if self.in_use > 0 && port.is_multiple_of(2) && !self.free.contains(&port) {
            self.in_use -= 1;
            self.free.push_back(port);
        }
    }

    /// Takes `port` out of the free list (a relayed leg a previous run left
    /// in the kernel still uses it); false if it was not free.
    pub fn reserve(&mut self, port: u16) -> bool {
        let Some(i) = self.free.iter().position(|&p| p == port) else {
            return false;
        };
        self.free.remove(i);
        self.in_use += 1;
        true
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_pairs_lru_and_exhaustion() {
        let mut a = PortAllocator::new(30001, 30008);
        assert_eq!(a.available(), 3); // 30002, 30004, 30006 (30008 has no RTCP slot)
        let p1 = a.allocate().unwrap();
        assert_eq!(p1, 30002);
        let p2 = a.allocate().unwrap();
        let p3 = a.allocate().unwrap();
        assert_eq!((p2, p3), (30004, 30006));
        assert_eq!(a.allocate(), None);
        a.release(p1);
        a.release(p1); // double release is ignored
        assert_eq!(a.available(), 1);
        assert_eq!(a.allocate(), Some(30002));
        a.release(30003); // odd ports are never ours
        assert_eq!(a.in_use(), 3);
    }

    #[test]
    fn reserved_ports_are_not_handed_out_until_released() {
        let mut a = PortAllocator::new(30000, 30005);
        assert!(a.reserve(30002));
        assert!(!a.reserve(30002), "already taken");
        assert!(!a.reserve(40000), "outside the range");
        assert_eq!(
            (a.allocate(), a.allocate(), a.allocate()),
            (Some(30000), Some(30004), None)
        );
        a.release(30002);
        assert_eq!(a.allocate(), Some(30002));
    }
}
