//! Throttling of digest guessing (sans-IO, fed Unix seconds): failed
//! authentications are counted per source address and per username within
//! a window; past the limit the source (or the username) is locked out for
//! a while, and its requests are refused before any digest is computed.
//! A username's lockout does not apply to addresses where that user holds
//! a live binding, so a guesser elsewhere cannot lock a phone out of its
//! own registration refreshes.

use crate::sip::transport::source_key;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug)]
pub struct AuthGuardConfig {
    /// Failures allowed within `window_secs` before the lockout.
    pub max_failures: u32,
    pub window_secs: u64,
    pub lockout_secs: u64,
    /// Sources (and usernames) remembered; beyond, unlocked ones are
    /// forgotten first.
    pub capacity: usize,
}

impl Default for AuthGuardConfig {
    fn default() -> Self {
        AuthGuardConfig {
            max_failures: 10,
            window_secs: 60,
            lockout_secs: 600,
            capacity: 65_536,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u32,
    since: u64,
    locked_until: u64,
}

/// Why a request is refused without looking at its credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockout {
    Source,
    User,
}

/// What a failure led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    Counted,
    /// This failure locked the source (or the username) out.
    LockedOut(Lockout),
}

#[derive(Debug)]
pub struct AuthGuard {
    cfg: AuthGuardConfig,
    sources: HashMap<IpAddr, Failures>,
    users: HashMap<String, Failures>,
}

impl AuthGuard {
    pub fn new(cfg: AuthGuardConfig) -> AuthGuard {
        AuthGuard {
            cfg,
            sources: HashMap::new(),
            users: HashMap::new(),
        }
    }

    /// Whether a request from `source` naming `user` is refused now.
    /// `bound_here`: `user` has a live binding at `source`.
    pub fn locked(
        &self,
        source: IpAddr,
        user: Option<&str>,
        bound_here: bool,
        now: u64,
    ) -> Option<Lockout> {
        if self
            .sources
            .get(&source_key(source))
            .is_some_and(|f| f.locked_until > now)
        {
            return Some(Lockout::Source);
        }
        if !bound_here
            && user
                .and_then(|u| self.users.get(u))
                .is_some_and(|f| f.locked_until > now)
        {
            return Some(Lockout::User);
        }
        None
    }

    /// Whether `user` is locked out for a request from an address where it
    /// holds no live binding (`bound_here` false).
    pub fn user_locked(&self, user: &str, bound_here: bool, now: u64) -> bool {
        !bound_here && self.users.get(user).is_some_and(|f| f.locked_until > now)
    }

    /// Counts a failed authentication from `source` as `user`; `known`:
    /// `user` is one of ours (unknown names are not worth a lockout, and
    /// are not kept: a flood of made-up names cannot fill the table).
    pub fn failed(&mut self, source: IpAddr, user: &str, known: bool, now: u64) -> Failed {
        let cfg = self.cfg;
        let by_source = count(&mut self.sources, source_key(source), now, cfg);
        let by_user = known && count(&mut self.users, user.to_string(), now, cfg);
        if by_source {
            Failed::LockedOut(Lockout::Source)
        } else if by_user {
            Failed::LockedOut(Lockout::User)
        } else {
            Failed::Counted
        }
    }

    /// A source that authenticated starts with a clean slate (its user's
    /// count only decays: a guesser elsewhere keeps their count).
    pub fn succeeded(&mut self, source: IpAddr) {
        self.sources.remove(&source_key(source));
    }

    /// Sources and usernames remembered.
    pub fn tracked(&self) -> usize {
        self.sources.len() + self.users.len()
    }
}

/// Counts one failure for `key`; whether it locked the key out now.
fn count<K: Hash + Eq>(
    table: &mut HashMap<K, Failures>,
    key: K,
    now: u64,
    cfg: AuthGuardConfig,
) -> bool {
    if !table.contains_key(&key) && table.len() >= cfg.capacity {
        // Forget what lapsed, then anything not locked; a table of locked
        // entries only is cleared (fail open rather than grow).
        table.retain(|_, f| f.locked_until > now || now < f.since.saturating_add(cfg.window_secs));
        if table.len() >= cfg.capacity {
            table.retain(|_, f| f.locked_until > now);
        }
        if table.len() >= cfg.capacity {
            table.clear();
        }
    }
    let f = table.entry(key).or_default();
    if f.locked_until > now {
        return false;
    }
    if f.count == 0 || now >= f.since.saturating_add(cfg.window_secs) {
        *f = Failures {
            count: 0,
            since: now,
            locked_until: 0,
        };
    }
    f.count += 1;
    if f.count >= cfg.max_failures {
        f.locked_until = now.saturating_add(cfg.lockout_secs);
        f.count = 0;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard() -> AuthGuard {
        AuthGuard::new(AuthGuardConfig {
            max_failures: 5,
            window_secs: 60,
            lockout_secs: 600,
            capacity: 1000,
        })
    }

    #[test]
    fn a_guesser_is_locked_out_at_the_limit_and_let_back_after() {
        let mut g = guard();
        let at = ip("203.0.113.9");
        for i in 0..4 {
            assert_eq!(g.failed(at, "alice", true, 100 + i), Failed::Counted);
            assert_eq!(g.locked(at, Some("alice"), false, 100 + i), None);
        }
        assert_eq!(
            g.failed(at, "alice", true, 104),
            Failed::LockedOut(Lockout::Source)
        );
        assert_eq!(g.locked(at, Some("bob"), false, 105), Some(Lockout::Source));
        assert_eq!(
            g.locked(ip("::ffff:203.0.113.9"), None, false, 105),
            Some(Lockout::Source)
        );
        // Until the lockout ends.
        assert_eq!(g.locked(at, None, false, 703), Some(Lockout::Source));
        assert_eq!(g.locked(at, None, false, 704), None);
    }

    #[test]
    fn failures_spread_beyond_the_window_never_lock() {
        let mut g = guard();
        let at = ip("203.0.113.9");
        for i in 0..50 {
            assert_eq!(g.failed(at, "alice", true, i * 20), Failed::Counted, "{i}");
        }
    }

    #[test]
    fn a_username_guessed_from_many_sources_is_locked_except_where_it_is_bound() {
        let mut g = guard();
        for i in 0..4 {
            let at = ip(&format!("198.51.100.{i}"));
            assert_eq!(g.failed(at, "alice", true, 100), Failed::Counted);
        }
        assert_eq!(
            g.failed(ip("198.51.100.9"), "alice", true, 100),
            Failed::LockedOut(Lockout::User)
        );
        let elsewhere = ip("198.51.100.77");
        assert_eq!(
            g.locked(elsewhere, Some("alice"), false, 101),
            Some(Lockout::User)
        );
        assert_eq!(g.locked(elsewhere, Some("bob"), false, 101), None);
        // The phone registered as alice keeps refreshing.
        assert_eq!(g.locked(elsewhere, Some("alice"), true, 101), None);
    }

    #[test]
    fn success_clears_the_source_only() {
        let mut g = guard();
        let at = ip("203.0.113.9");
        for _ in 0..4 {
            g.failed(at, "alice", true, 100);
        }
        g.succeeded(at);
        for _ in 0..4 {
            assert_eq!(g.failed(at, "bob", true, 101), Failed::Counted);
        }
        // alice's count went on: 4 before, one more now locks her.
        assert_eq!(
            g.failed(ip("192.0.2.1"), "alice", true, 102),
            Failed::LockedOut(Lockout::User)
        );
    }

    #[test]
    fn an_ipv6_guesser_cannot_rotate_through_its_slash_64() {
        let mut g = guard();
        for i in 0..4u16 {
            let at: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert_eq!(g.failed(at, "x", false, 100), Failed::Counted);
        }
        assert_eq!(
            g.failed(ip("2001:db8:1:2:ffff::1"), "x", false, 100),
            Failed::LockedOut(Lockout::Source)
        );
        assert_eq!(
            g.locked(ip("2001:db8:1:2::99"), None, false, 101),
            Some(Lockout::Source)
        );
        assert_eq!(g.locked(ip("2001:db8:1:3::1"), None, false, 101), None);
    }

    #[test]
    fn spoofed_sources_keep_the_table_bounded() {
        let mut g = guard();
        for i in 0..100_000u32 {
            g.failed(IpAddr::from(i.to_be_bytes()), "x", false, 100);
            assert!(g.tracked() <= 1001);
        }
    }
}
