//! Where a forwarded call goes: the number's target resolved to a
//! trunk, a registered user or a SIP URI, and the listener it leaves
//! from.

use crate::core::*;
use crate::sip::uri::Scheme;
use crate::sip::{Uri, headers_typed::NameAddr};
use domain::model::Number;

impl Core {
    /// Where a number's forward target is reached: the trunk's outbound
    /// address when the number names a trunk, a registered user's live
    /// binding when the target is one of our SIP users, else the target
    /// URI's own host (an IP literal: the core does no DNS).
    pub(in crate::core) fn resolve_forward(
        &self,
        now: Instant,
        number: &Number,
    ) -> Result<OutTarget, &'static str> {
        let target = number.target.as_deref().ok_or("no forward target")?;
        let routing = self.routing.clone();
        if !target.contains(':')
            && let Some(user) = routing.user(target)
        {
            let now_ms = self.clock.unix_ms(now);
            let b = self
                .registrar
                .bindings_of(&user.username, now_ms)
                .into_iter()
                .next()
                .ok_or("user not registered")?;
            let uri = Uri::parse(&b.contact)
                .or_else(|_| NameAddr::parse(&b.contact).map(|n| n.uri))
                .map_err(|_| "bad binding contact")?;
            let local = self
                .listener_for(b.transport, b.source)
                .ok_or("no listener")?;
            return Ok(OutTarget {
                uri,
                peer: Peer {
                    transport: b.transport,
                    local,
                    remote: b.source,
                    conn: None,
                },
                credentials: None,
                via_trunk: false,
                media_security: domain::model::MediaSecurity::default(),
                cleartext_keying: false,
            });
        }
        let uri = Uri::parse(target).map_err(|_| "forward target is not a SIP URI")?;
        let trunk = number.trunk.as_deref().and_then(|t| routing.trunk(t));
        let via_trunk = trunk.is_some();
        let (media_security, cleartext_keying) = trunk.map_or(Default::default(), |t| {
            (t.trunk.media_security, t.trunk.srtp_cleartext_keying)
        });
        let (transport, remote, credentials) = match trunk {
            Some(t) => {
                if t.trunk.outbound_address.is_none() {
                    return Err("trunk has no outbound address");
                }
                let remote = t
                    .outbound_addr()
                    .ok_or("trunk outbound address is not IP:port")?;
                let transport = t
                    .transport()
                    .ok_or("trunk transport not supported for forwarding")?;
                // RFC 3261 §26.2: sips: is TLS on every hop, ours included.
                if uri.scheme == Scheme::Sips && transport != TransportKind::Tls {
                    return Err("a sips: target through a trunk that is not TLS");
                }
                let creds = t.trunk.username.clone().zip(t.trunk.password.clone());
                (transport, remote, creds)
            }
            None => {
                let ip = uri
                    .host
                    .as_ref()
                    .and_then(|h| h.ip())
                    .ok_or("forward target host is not an IP address")?;
                // Every way to a direct target ends here (numbers, REST and
                // AI transfers, a caller's REFER): the tenants' target
                // policy holds for all. Trunks are the operator's.
                if self.cfg.targets.check_ip(ip).is_err() {
                    return Err(
                        "forward target address is not allowed (api.allowed_target_networks)",
                    );
                }
                // RFC 3261 §26.2: a sips: target is reached over TLS only.
                let transport = match (uri.scheme, uri.transport_param().as_deref()) {
                    (Scheme::Sips, None | Some("tls" | "tcp")) => TransportKind::Tls,
                    (Scheme::Sips, Some(_)) => return Err("a sips: target needs TLS"),
                    (_, None | Some("udp")) => TransportKind::Udp,
                    (_, Some("tcp")) => TransportKind::Tcp,
                    (_, Some("tls")) => TransportKind::Tls,
                    (_, Some(_)) => return Err("target transport not supported"),
                };
                // §19.1.2: TLS defaults to 5061, whatever the scheme.
                let port = match (uri.port, transport) {
                    (Some(p), _) => p,
                    (None, TransportKind::Tls) => 5061,
                    (None, _) => uri.port_or_default(),
                };
                let remote = SocketAddr::new(ip, port);
                // TLS to an address is made with the settings of the trunk
                // that sends there (its client certificate among them):
                // only calls through that trunk may use them.
                if transport == TransportKind::Tls
                    && routing.trunks().any(|e| {
                        e.transport() == Some(TransportKind::Tls)
                            && e.outbound_addr() == Some(remote)
                    })
                {
                    return Err("the target is a TLS trunk's address: route through the trunk");
                }
                (transport, remote, None)
            }
        };
        let local = self
            .listener_for(transport, remote)
            .ok_or("no listener for the target's transport")?;
        let target = OutTarget {
            uri,
            peer: Peer {
                transport,
                local,
                remote,
                conn: None,
            },
            credentials,
            via_trunk,
            media_security,
            cleartext_keying,
        };
        target
            .keying_possible()
            .map_err(|_| "the trunk requires SRTP but SDES keys may not cross its signalling")?;
        Ok(target)
    }

    /// Our listener for requests of `transport` to `remote`.
    fn listener_for(&self, transport: TransportKind, remote: SocketAddr) -> Option<SocketAddr> {
        self.cfg
            .listeners
            .iter()
            .filter(|(t, a)| *t == transport && a.is_ipv4() == remote.is_ipv4())
            .map(|(_, a)| *a)
            .next()
    }
}
