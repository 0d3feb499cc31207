//! The registrar (RFC 3261 §10.3) with digest authentication (RFC 8760:
//! SHA-256 preferred, MD5 offered; qop=auth; stale nonces). Unknown users
//! and wrong passwords get the same challenge, so usernames cannot be
//! enumerated. Nonces are bound to the client's address and their `nc`
//! tracked (replays refused); failures are throttled per source and per
//! username ([`super::auth_guard`]); a user holds a bounded number of
//! bindings.

use super::auth_guard::{AuthGuard, AuthGuardConfig, Failed, Lockout};
use crate::routing::RoutingTable;
use crate::sip::Request;
use crate::sip::digest::{
    Algorithm, Challenge, Credentials, NonceCheck, NonceCounts, NonceSigner, NonceUse,
    constant_time_eq,
};
use crate::sip::grammar;
use crate::sip::header::HeaderName;
use crate::sip::headers_typed::NameAddr;
use crate::sip::transport::{Peer, TransportKind};
use domain::model::Registration;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    pub realm: String,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Contacts one user may hold at once; a REGISTER beyond gets 403.
    pub max_bindings_per_user: usize,
    /// Challenges offered, in order (RFC 8760 §2.4: SHA-256 first).
    pub algorithms: Vec<Algorithm>,
    pub guard: AuthGuardConfig,
}

/// Why credentials were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    /// No usable credentials (or a nonce we did not issue to this
    /// address): challenge. Not a failure.
    Challenge,
    /// The right answer to an old nonce: challenge with stale=true.
    Stale,
    /// A nonce (and nc) used before, or one too old to remember: a
    /// replay, or a client reusing its nonce; challenge with stale=true.
    Replayed,
    /// A wrong answer: challenge again; counted, and `locked` when this
    /// failure locked the source or the username out.
    Failed { locked: Option<Lockout> },
    /// Locked out: refused (403) without a look at the credentials.
    LockedOut(Lockout),
    /// A final error status with a reason.
    Reject(u16, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    pub expires_at_ms: i64,
    pub source: SocketAddr,
    pub transport: TransportKind,
    pub call_id: String,
    pub cseq: u32,
}

/// A change the store (and the other nodes) must learn about.
pub use domain::model::RegistrationChange;

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 401 with challenges (stale=true when only the nonce was old).
    Challenge { stale: bool },
    /// 423 Interval Too Brief with Min-Expires.
    IntervalTooBrief { min: u32 },
    /// A final error status with a reason.
    Reject(u16, String),
    /// 200 OK listing the current bindings as (contact, seconds left).
    Ok {
        bindings: Vec<(String, u32)>,
        changes: Vec<RegistrationChange>,
    },
}

pub struct Registrar {
    cfg: RegistrarConfig,
    signer: NonceSigner,
    nonces: NonceCounts,
    guard: AuthGuard,
    /// Makes every nonce unique (see [`NonceSigner::issue`]).
    salt: u64,
    bindings: HashMap<String, Vec<Binding>>,
    by_source: HashMap<SocketAddr, String>,
}

fn transport_label(t: TransportKind) -> &'static str {
    t.label()
}

impl Registrar {
    /// `nonce_lifetime_secs`: how long the signer's nonces live (their
    /// counts are remembered that long); `salt`: where this process's nonce
    /// salts start (random, so nodes sharing a secret differ).
    pub fn new(
        cfg: RegistrarConfig,
        signer: NonceSigner,
        nonce_lifetime_secs: u64,
        salt: u64,
    ) -> Registrar {
        Registrar {
            nonces: NonceCounts::new(nonce_lifetime_secs, cfg.guard.capacity),
            guard: AuthGuard::new(cfg.guard),
            salt,
            cfg,
            signer,
            bindings: HashMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Loads bindings persisted by an earlier run (or another node).
    pub fn load(&mut self, regs: Vec<Registration>) {
        self.insert(regs, true);
    }

    /// Bindings another node took: where to reach the user, but no trust
    /// for their source address here (behind a NAT the address this node
    /// sees can be another device's), so not in `by_source`.
    pub fn merge_remote(&mut self, regs: Vec<Registration>) {
        self.insert(regs, false);
    }

    fn insert(&mut self, regs: Vec<Registration>, trusted: bool) {
        for r in regs {
            let Ok(source) = r.source.parse() else {
                continue;
            };
            let b = Binding {
                contact: r.contact,
                expires_at_ms: r.expires_at,
                source,
                transport: TransportKind::from_label(&r.transport).unwrap_or(TransportKind::Udp),
                call_id: r.call_id,
                cseq: r.cseq,
            };
            if trusted {
                self.by_source.insert(source, r.username.clone());
            }
            let list = self.bindings.entry(r.username).or_default();
            list.retain(|x| x.contact != b.contact);
            list.push(b);
        }
    }

    /// A change another node made (announced through the store): applied
    /// as this node's own would be, without writing it again.
    pub fn apply(&mut self, change: RegistrationChange) {
        match change {
            RegistrationChange::Upsert(r) => self.merge_remote(vec![r]),
            RegistrationChange::Delete { username, contact } => {
                let Some(list) = self.bindings.get_mut(&username) else {
                    return;
                };
                let mut gone = Vec::new();
                list.retain(|b| {
                    let keep = b.contact != contact;
                    if !keep {
                        gone.push(b.source);
                    }
                    keep
                });
                if list.is_empty() {
                    self.bindings.remove(&username);
                }
                for source in gone {
                    let still_bound = self
                        .bindings
                        .get(&username)
                        .is_some_and(|l| l.iter().any(|b| b.source == source));
                    if !still_bound && self.by_source.get(&source) == Some(&username) {
                        self.by_source.remove(&source);
                    }
                }
            }
        }
    }

    /// The challenges to send `client`, one per configured algorithm (by
    /// default SHA-256, then MD5: RFC 8760 §2.4), with a nonce only
    /// `client` can use.
    pub fn challenges(&mut self, unix_secs: u64, stale: bool, client: IpAddr) -> Vec<String> {
        self.salt = self.salt.wrapping_add(1);
        let nonce = self.signer.issue(unix_secs, self.salt, client);
        self.cfg
            .algorithms
            .iter()
            .copied()
            .map(|algorithm| {
                Challenge {
                    realm: self.cfg.realm.clone(),
                    nonce: nonce.clone(),
                    algorithm,
                    qop_auth: true,
                    stale,
                    opaque: None,
                }
                .encode()
            })
            .collect()
    }

    /// Checks the request's digest credentials from `client` against
    /// `routing`'s users: the authenticated username, or why not.
    pub fn authenticate(
        &mut self,
        req: &Request,
        client: SocketAddr,
        now_ms: i64,
        routing: &RoutingTable,
    ) -> Result<String, AuthRefusal> {
        let unix_secs = (now_ms / 1000).max(0) as u64;
        let ip = client.ip();
        if self.source_locked(ip, now_ms) {
            return Err(AuthRefusal::LockedOut(Lockout::Source));
        }
        let header = req
            .headers
            .get_all(&HeaderName::Authorization)
            .chain(req.headers.get_all(&HeaderName::ProxyAuthorization))
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == self.cfg.realm);
        let Some(creds) = header else {
            return Err(AuthRefusal::Challenge);
        };
        let bound_here = self.bound_at(&creds.username, ip, now_ms);
        if self
            .guard
            .user_locked(&creds.username, bound_here, unix_secs)
        {
            return Err(AuthRefusal::LockedOut(Lockout::User));
        }
        // Only what we offer: an operator who offers SHA-256 alone does
        // not take MD5 answers.
        let Some(alg) = creds
            .algorithm()
            .filter(|a| self.cfg.algorithms.contains(a))
        else {
            return Err(AuthRefusal::Challenge);
        };
        let nonce_state = self.signer.check(&creds.nonce, unix_secs, ip);
        if nonce_state == NonceCheck::Invalid {
            return Err(AuthRefusal::Challenge);
        }
        // Unknown users are checked against a throwaway digest so that the
        // work and the answer are the same as for a wrong password.
        let user = routing.user(&creds.username);
        let ha1 = match (user, alg) {
            (Some(u), Algorithm::Md5) => u.ha1_md5.clone(),
            (Some(u), Algorithm::Sha256) => u.ha1_sha256.clone(),
            (None, a) => a.hash(&format!("{}:{}:", creds.username, self.cfg.realm)),
        };
        let expected = creds.expected_response(alg, &ha1, req.method.as_str());
        let ok = user.is_some()
            && expected.is_some_and(|e| constant_time_eq(e.as_bytes(), creds.response.as_bytes()));
        if !ok {
            let locked = match self
                .guard
                .failed(ip, &creds.username, user.is_some(), unix_secs)
            {
                Failed::Counted => None,
                Failed::LockedOut(l) => Some(l),
            };
            return Err(AuthRefusal::Failed { locked });
        }
        if nonce_state == NonceCheck::Stale {
            return Err(AuthRefusal::Stale);
        }
        if creds.uri != req.uri.as_str() {
            return Err(AuthRefusal::Reject(
                400,
                "Authorization uri does not match the Request-URI".into(),
            ));
        }
        let nc = creds
            .qop
            .as_deref()
            .filter(|q| q.eq_ignore_ascii_case("auth"))
            .and(creds.nc.as_deref());
        match self.nonces.record(&creds.nonce, nc, unix_secs) {
            NonceUse::Fresh => {}
            NonceUse::Replayed | NonceUse::Forgotten => return Err(AuthRefusal::Replayed),
        }
        self.guard.succeeded(ip);
        Ok(creds.username)
    }

    /// Counts a request refused because its source is neither a trunk nor a
    /// registered user, sent over a stream transport (TCP or TLS: the
    /// handshake proved the address, so a spoofer cannot charge it to
    /// someone else). A scanner's count shares the failed-authentication
    /// table; `true` when this refusal locked the source out.
    pub fn scanner_refused(&mut self, ip: IpAddr, now_ms: i64) -> bool {
        let now = (now_ms / 1000).max(0) as u64;
        self.guard.failed(ip, "", false, now) == Failed::LockedOut(Lockout::Source)
    }

    /// Whether `ip` is locked out for failed authentications. An address
    /// where some user holds a live binding never is (one guesser behind a
    /// NAT must not cut off the phones there; each username's own lockout
    /// still holds against it).
    pub fn source_locked(&self, ip: IpAddr, now_ms: i64) -> bool {
        let now = (now_ms / 1000).max(0) as u64;
        self.guard.locked(ip, None, false, now).is_some() && !self.has_binding_at(ip, now_ms)
    }

    /// Whether any user holds a live binding registered from `ip`.
    pub fn has_binding_at(&self, ip: IpAddr, now_ms: i64) -> bool {
        self.by_source.iter().any(|(s, user)| {
            s.ip() == ip
                && self
                    .bindings
                    .get(user)
                    .is_some_and(|l| l.iter().any(|b| b.source == *s && b.expires_at_ms > now_ms))
        })
    }

    /// Whether `user` holds a live binding registered from `ip`.
    fn bound_at(&self, user: &str, ip: IpAddr, now_ms: i64) -> bool {
        self.bindings.get(user).is_some_and(|l| {
            l.iter()
                .any(|b| b.source.ip() == ip && b.expires_at_ms > now_ms)
        })
    }

    /// Handles a REGISTER (§10.3 steps 4–8) after authentication.
    pub fn register(
        &mut self,
        req: &Request,
        username: &str,
        peer: &Peer,
        now_ms: i64,
    ) -> RegisterOutcome {
        let aor_user = req.core.to.uri.user.as_deref().unwrap_or("");
        if aor_user != username {
            return RegisterOutcome::Reject(
                403,
                "credentials do not match the address of record".into(),
            );
        }
        let header_expires = req
            .headers
            .get(&HeaderName::Expires)
            .and_then(|v| grammar::parse_decimal(v, u32::MAX as u64))
            .map(|v| v as u32);
        let contacts = req.headers.list(&HeaderName::Contact);
        let mut changes = Vec::new();
        if contacts.contains(&"*") {
            // §10.3 step 6: "*" only with Expires: 0 and alone.
            if contacts.len() != 1 || header_expires != Some(0) {
                return RegisterOutcome::Reject(
                    400,
                    "Contact * needs Expires: 0 and no other contacts".into(),
                );
            }
            for b in self.bindings.remove(username).unwrap_or_default() {
                self.by_source.remove(&b.source);
                changes.push(RegistrationChange::Delete {
                    username: username.to_string(),
                    contact: b.contact,
                });
            }
            return RegisterOutcome::Ok {
                bindings: Vec::new(),
                changes,
            };
        }
        let mut updates = Vec::new();
        for c in &contacts {
            let Ok(na) = NameAddr::parse(c) else {
                return RegisterOutcome::Reject(400, "malformed Contact".into());
            };
            let expires = match na.params.value("expires") {
                Some(v) => match grammar::parse_decimal(v, u32::MAX as u64) {
                    Some(e) => e as u32,
                    None => {
                        return RegisterOutcome::Reject(400, "malformed Contact expires".into());
                    }
                },
                None => header_expires.unwrap_or(self.cfg.default_expires),
            };
            if expires != 0 && expires < self.cfg.min_expires {
                return RegisterOutcome::IntervalTooBrief {
                    min: self.cfg.min_expires,
                };
            }
            updates.push((
                na.uri.as_str().to_string(),
                expires.min(self.cfg.max_expires),
            ));
        }
        let list = self.bindings.entry(username.to_string()).or_default();
        // The cap counts what the user would hold after this REGISTER.
        let after = list
            .iter()
            .filter(|b| b.expires_at_ms > now_ms && !updates.iter().any(|(c, _)| *c == b.contact))
            .count()
            + updates.iter().filter(|(_, e)| *e > 0).count();
        if after > self.cfg.max_bindings_per_user {
            return RegisterOutcome::Reject(
                403,
                format!(
                    "at most {} contacts per user",
                    self.cfg.max_bindings_per_user
                ),
            );
        }
        for (contact, expires) in updates {
            list.retain(|b| b.contact != contact);
            if expires == 0 {
                changes.push(RegistrationChange::Delete {
                    username: username.to_string(),
                    contact,
                });
                continue;
            }
            let b = Binding {
                contact: contact.clone(),
                expires_at_ms: now_ms + i64::from(expires) * 1000,
                source: peer.remote,
                transport: peer.transport,
                call_id: req.core.call_id.clone(),
                cseq: req.core.cseq.seq,
            };
            changes.push(RegistrationChange::Upsert(Registration {
                username: username.to_string(),
                contact,
                expires_at: b.expires_at_ms,
                source: peer.remote.to_string(),
                transport: transport_label(peer.transport).to_string(),
                call_id: b.call_id.clone(),
                cseq: b.cseq,
            }));
            list.push(b);
        }
        list.retain(|b| b.expires_at_ms > now_ms);
        let bindings = list
            .iter()
            .map(|b| {
                (
                    b.contact.clone(),
                    ((b.expires_at_ms - now_ms).max(0) / 1000) as u32,
                )
            })
            .collect();
        self.reindex();
        RegisterOutcome::Ok { bindings, changes }
    }

    fn reindex(&mut self) {
        self.by_source.clear();
        for (user, list) in &self.bindings {
            for b in list {
                self.by_source.insert(b.source, user.clone());
            }
        }
    }

    /// Drops lapsed bindings; returns how many.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let before = self.count();
        for list in self.bindings.values_mut() {
            list.retain(|b| b.expires_at_ms > now_ms);
        }
        self.bindings.retain(|_, l| !l.is_empty());
        self.reindex();
        before - self.count()
    }

    pub fn count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// The registered user sending from `source`, if any.
    pub fn user_at(&self, source: SocketAddr, now_ms: i64) -> Option<&str> {
        let user = self.by_source.get(&source)?;
        self.bindings
            .get(user)?
            .iter()
            .any(|b| b.source == source && b.expires_at_ms > now_ms)
            .then_some(user.as_str())
    }

    /// Current bindings of a user (to reach them as a call target).
    pub fn bindings_of(&self, username: &str, now_ms: i64) -> Vec<&Binding> {
        self.bindings
            .get(username)
            .map(|l| l.iter().filter(|b| b.expires_at_ms > now_ms).collect())
            .unwrap_or_default()
    }
}
