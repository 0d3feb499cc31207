//! Blocked callers, checked on every INVITE and MESSAGE before any media,
//! webhook or database work. Keyed so that a check costs a few hash
//! lookups whatever the list's size: exact callers in one map, prefixes in
//! another probed once per prefix length of the caller (E.164 numbers have
//! at most 20 digits), each entry for a whole account or one number.

use crate::routing::{Pattern, normalize_e164};
use std::collections::HashMap;

/// Which of the account's numbers an entry covers: all, or one pattern
/// (canonical text).
type Scope = Option<String>;

#[derive(Clone, Debug, Default)]
struct AccountBlocks {
    exact: HashMap<String, Vec<Scope>>,
    prefixes: HashMap<String, Vec<Scope>>,
    /// Longest prefix present: probing stops there.
    longest_prefix: usize,
}

#[derive(Clone, Debug, Default)]
pub struct BlockList {
    accounts: HashMap<String, AccountBlocks>,
    len: usize,
}

impl BlockList {
    /// Adds an entry (patterns already validated by the caller).
    pub fn insert(&mut self, account: &str, number: Option<Pattern>, caller: Pattern) {
        let a = self.accounts.entry(account.to_string()).or_default();
        let scope = number.map(|p| p.to_string());
        match caller {
            Pattern::Exact(e) => a.exact.entry(e).or_default().push(scope),
            Pattern::Prefix(p) => {
                a.longest_prefix = a.longest_prefix.max(p.len());
                a.prefixes.entry(p).or_default().push(scope);
            }
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `account` blocks anyone.
    pub fn has_account(&self, account: &str) -> bool {
        self.accounts.contains_key(account)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `caller` may not reach the number `number_pattern` (the
    /// matched number's canonical pattern) of `account`.
    pub fn is_blocked(&self, account: &str, number_pattern: &str, caller: &str) -> bool {
        let Some(a) = self.accounts.get(account) else {
            return false;
        };
        let Some(caller) = normalize_e164(caller) else {
            return false;
        };
        let covers = |scopes: &Vec<Scope>| {
            scopes
                .iter()
                .any(|s| s.as_deref().is_none_or(|n| n == number_pattern))
        };
        if a.exact.get(&caller).is_some_and(covers) {
            return true;
        }
        if a.prefixes.is_empty() {
            return false;
        }
        (0..=caller.len().min(a.longest_prefix))
            .filter(|i| caller.is_char_boundary(*i))
            .any(|i| a.prefixes.get(&caller[..i]).is_some_and(covers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn exact_prefix_scope_and_account() {
        let mut b = BlockList::default();
        b.insert("acc", None, p("+1900*"));
        b.insert("acc", Some(p("+15550001")), p("+15551234567"));
        b.insert("acc", Some(p("+1555*")), p("+44*"));
        b.insert("other", None, p("*"));
        assert_eq!(b.len(), 4);
        assert!(b.is_blocked("acc", "+15550001", "+19005550000"));
        assert!(b.is_blocked("acc", "+15550001", "1 (900) 555-0000"));
        assert!(b.is_blocked("acc", "+15550001", "+1 555 123 4567"));
        assert!(
            !b.is_blocked("acc", "+15550002", "+15551234567"),
            "scoped to one number"
        );
        assert!(b.is_blocked("acc", "+1555*", "+442079460000"));
        assert!(!b.is_blocked("acc", "+15550001", "+442079460000"));
        assert!(b.is_blocked("other", "+1", "+1"), "'*' blocks every caller");
        assert!(!b.is_blocked("nobody", "+1", "+19005550000"));
        assert!(
            !b.is_blocked("acc", "+15550001", "anonymous"),
            "not a number: not matched"
        );
    }
}
