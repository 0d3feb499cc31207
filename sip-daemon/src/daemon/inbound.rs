//! The order inbound SIP is handled in: trunks' messages first, without
//! letting a flood that passes for a trunk starve the others.

use crate::transport::Inbound;
use tokio::sync::mpsc;

/// Messages waiting for the core; beyond this, datagrams are dropped and
/// counted (UDP senders retransmit).
pub(super) const INBOUND_QUEUE: usize = 32_768;
/// Messages handled per wake-up before timers and other events get a turn.
pub(super) const INBOUND_BATCH: usize = 256;

/// Handles what is already queued before the next poll (one wake-up per
/// burst, not per message), at most a batch: trunk messages first, but
/// every [`OTHER_TURN`]th turn goes to the other queue first, so a flood
/// that passes for a trunk (a spoofed carrier address) cannot starve the
/// registered phones either.
pub(super) fn drain_inbound(
    trunk_rx: &mut mpsc::Receiver<Inbound>,
    in_rx: &mut mpsc::Receiver<Inbound>,
    mut handle: impl FnMut(Inbound),
) {
    for turn in 0..INBOUND_BATCH {
        let next = if turn % OTHER_TURN == OTHER_TURN - 1 {
            in_rx.try_recv().or_else(|_| trunk_rx.try_recv())
        } else {
            trunk_rx.try_recv().or_else(|_| in_rx.try_recv())
        };
        let Ok(inb) = next else {
            break;
        };
        handle(inb);
    }
}

/// One turn in this many serves the non-trunk queue first.
const OTHER_TURN: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transport::{Peer, TransportKind};

    fn inbound(port: u16) -> Inbound {
        Inbound {
            peer: Peer {
                transport: TransportKind::Udp,
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: std::net::SocketAddr::from(([192, 0, 2, 1], port)),
                conn: None,
            },
            msg: Err(crate::sip::parse::ParseError::Drop("test")),
        }
    }

    #[test]
    fn queued_trunk_messages_are_handled_before_the_flood() {
        let (trunk_tx, mut trunk_rx) = mpsc::channel(INBOUND_QUEUE);
        let (in_tx, mut in_rx) = mpsc::channel(INBOUND_QUEUE);
        for i in 0..1000 {
            in_tx.try_send(inbound(10_000 + i)).unwrap();
        }
        for i in 0..3 {
            trunk_tx.try_send(inbound(i)).unwrap();
        }
        let mut order = Vec::new();
        drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
            order.push(inb.peer.remote.port());
            if order.len() == 10 {
                // One arrives from the trunk mid-batch: it goes next.
                trunk_tx.try_send(inbound(3)).unwrap();
            }
        });
        assert_eq!(order.len(), INBOUND_BATCH, "one batch per wake-up");
        assert_eq!(&order[..3], &[0, 1, 2]);
        assert_eq!(order[10], 3);
        assert!(order[3..10].iter().all(|p| *p >= 10_000));
    }

    #[test]
    fn a_flood_through_the_trunk_queue_leaves_the_others_their_share() {
        let (trunk_tx, mut trunk_rx) = mpsc::channel(INBOUND_QUEUE);
        let (in_tx, mut in_rx) = mpsc::channel(INBOUND_QUEUE);
        for i in 0..1000 {
            trunk_tx.try_send(inbound(i)).unwrap();
            in_tx.try_send(inbound(10_000 + i)).unwrap();
        }
        let mut others = 0;
        drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
            if inb.peer.remote.port() >= 10_000 {
                others += 1;
            }
        });
        assert_eq!(others, INBOUND_BATCH / OTHER_TURN);
    }
}
