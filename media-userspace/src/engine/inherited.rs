//! Relayed legs a previous run left in the kernel: taken over at start,
//! adopted by restored calls, the rest released.

use super::*;

impl MediaEngine {
    /// Removes the kernel rules a previous run left that no restored call
    /// adopted ([`MediaCommand::AdoptRelay`]): their calls ended while the
    /// daemon was away, or are not ours to resume. Frees their ports;
    /// returns how many legs were removed.
    pub fn release_inherited(&self) -> usize {
        let shared = &self.inner.shared;
        let left: Vec<Inherited> = lock(&shared.inherited).drain().map(|(_, i)| i).collect();
        if let Some(x) = &shared.cfg.xdp {
            for i in &left {
                x.remove_key(&i.key);
                if i.reserved {
                    release_port(shared, u16::from_be(i.key.local_port));
                }
            }
        }
        let n = left.len();
        if n > 0 {
            tracing::info!(
                legs = n,
                "removed relayed legs a previous run left that no open call adopted"
            );
        }
        left.len()
    }
}

/// Binds the two ports of a relay a restored call adopts and takes its
/// pinned rules, when the kernel still holds both and they are the two
/// directions of this very pair.
pub(super) fn adopt_sockets(
    shared: &Shared,
    ports: [u16; 2],
) -> Result<([BoundLeg; 2], Option<Box<AdoptedRules>>), String> {
    if ports[0] == 0 || ports[1] == 0 || ports[0] == ports[1] {
        return Err(format!("relay ports {ports:?} are not a pair"));
    }
    let mut taken = {
        let mut inherited = lock(&shared.inherited);
        ports.map(|p| inherited.remove(&p))
    };
    let mut bound: Vec<BoundLeg> = Vec::with_capacity(2);
    for (p, inherited) in ports.into_iter().zip(&taken) {
        // A port a previous run left in the kernel is reserved already;
        // another one is reserved now, unless outside the range (then it
        // is never handed back to the allocator).
        let owned = match inherited {
            Some(i) => i.reserved,
            None => lock(&shared.ports).reserve(p),
        };
        let addr = SocketAddr::new(shared.cfg.bind_ip, p);
        let rtp = match std::net::UdpSocket::bind(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                // Ports this call reserved go back; an inherited one stays
                // reserved with its rule for the release.
                for b in &bound {
                    if b.owned
                        && taken
                            .iter()
                            .flatten()
                            .all(|i| u16::from_be(i.key.local_port) != b.port)
                    {
                        release_port(shared, b.port);
                    }
                }
                if owned && inherited.is_none() {
                    release_port(shared, p);
                }
                forget_inherited(shared, &mut taken);
                return Err(format!("relay port {addr} cannot be bound again: {e}"));
            }
        };
        let rtcp = bind_rtcp_socket(shared, p);
        bound.push(BoundLeg {
            rtp,
            port: p,
            rtcp,
            owned,
        });
    }
    let Ok(sockets) = <[BoundLeg; 2]>::try_from(bound) else {
        return Err("relay sockets".into());
    };
    let same_pair = |a: &Inherited, b: &Inherited| {
        // Side A's rule leaves from side B's port, and the reverse.
        a.rule.src_port_host() == ports[1] && b.rule.src_port_host() == ports[0]
    };
    let adopted = match taken {
        [Some(a), Some(b)] if same_pair(&a, &b) => {
            // Side A's rule sends to B's peer and B's to A's.
            let peers = [
                crate::offload::rule_remote(&b.rule),
                crate::offload::rule_remote(&a.rule),
            ];
            Some(Box::new(AdoptedRules {
                rules: [(a.key, a.rule), (b.key, b.rule)],
                peers,
            }))
        }
        others => {
            // Half a pair, or rules of other pairs: of no use to this
            // relay, which offloads afresh once latched.
            if let Some(x) = &shared.cfg.xdp {
                for i in others.iter().flatten() {
                    x.remove_key(&i.key);
                }
            }
            None
        }
    };
    Ok((sockets, adopted))
}

/// Puts rules taken for an adoption that failed back among the inherited.
pub(super) fn forget_inherited(shared: &Shared, taken: &mut [Option<Inherited>; 2]) {
    let mut inherited = lock(&shared.inherited);
    for i in taken.iter_mut().filter_map(Option::take) {
        inherited.insert(u16::from_be(i.key.local_port), i);
    }
}

/// Relayed legs a previous run of the daemon left in the kernel (pinned
/// maps, [`crate::xdp::XdpOffload::load_pinned`]): their media goes on
/// flowing across the restart. Their ports stay out of the allocator
/// until a restored call adopts its pair ([`MediaCommand::AdoptRelay`])
/// or the rest are released ([`MediaEngine::release_inherited`]). They
/// count in no statistic until adopted: the relay that adopts a pair
/// counts it as its own.
pub(super) fn take_over_inherited(shared: &Arc<Shared>) -> Result<(), EngineError> {
    let Some(x) = shared.cfg.xdp.clone() else {
        return Ok(());
    };
    let rules = x.rules();
    if rules.is_empty() {
        return Ok(());
    }
    let mut inherited = lock(&shared.inherited);
    let mut ports = lock(&shared.ports);
    for (key, rule) in rules {
        let port = u16::from_be(key.local_port);
        if let Some(old) = inherited.get(&port) {
            // The same port under another local address (the bind address
            // changed): neither can be adopted by port; both go.
            x.remove_key(&old.key);
            x.remove_key(&key);
            if let Some(old) = inherited.remove(&port)
                && old.reserved
            {
                ports.release(port);
            }
            continue;
        }
        let reserved = ports.reserve(port);
        inherited.insert(
            port,
            Inherited {
                key,
                rule,
                reserved,
            },
        );
    }
    tracing::info!(
        legs = inherited.len(),
        "took over relayed legs a previous run left in the kernel"
    );
    Ok(())
}
