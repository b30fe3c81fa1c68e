//! The fixed-size table of buckets in shared data.
//!
//! Shared data has no delete and never CAS-protects a key's first creation, so the filter never
//! creates a key on the request path. At configure time every worker creates the same
//! `groups` keys `rate-limit/<plugin name>/<i>` with the same zero bytes
//! ([`shared::shared_cell::ensure_exists`]: repeating it is harmless), and requests only
//! CAS-update them. The key set, and so the memory, is fixed whatever the traffic. The plugin
//! name (Envoy's `config.name`) keeps two instances in one VM apart (per-IP before jwt-auth,
//! per-claim after it): never a configuration fingerprint, which would leak one table per
//! configuration edit since shared data has no delete.
//!
//! Each key is a *group* of [`WAYS`] entries (4-way set-associative), 16 bytes each:
//!
//! ```text
//! tag: u64 LE   bits 56..63 = rule index + 1 (0 = empty), bits 0..55 = fingerprint of the key
//! x:   u64 LE   the bucket state (see bucket.rs)
//! ```
//!
//! A request's key (rule + descriptor entries) hashes, with SipHash-2-4 keyed by the proxy's
//! seed ([`shared::seed`]), to a group and a 56-bit fingerprint: without the seed nobody can
//! tell which keys share a group. Finding a slot in the group, in order:
//! 1. the entry with the same tag: that key's bucket;
//! 2. an empty entry, or an entry whose bucket is full again: a full bucket holds no
//!    information, so taking its slot loses nothing (counted as `slot_reused`);
//! 3. all four hold live (not yet refilled) buckets of other keys: `on_full` decides:
//!    `EVICT` (default) replaces the one that will be full soonest (ties broken by the new
//!    key's hash, not by slot order), and the new key *inherits that bucket's debt*: it is
//!    full no sooner than the evicted one would have been. So no slot of a full group ever
//!    frees before the evicted key's own bucket would have refilled, and an evicted key that
//!    comes back inherits at least its own debt: eviction can never hand a key a fresh budget.
//!    The cost falls on the newcomer, who may find fewer tokens than a fresh bucket holds.
//!    `DENY` refuses the request (`table_full`).
//!
//! Two keys with the same group and fingerprint share a bucket: a 2^-56 chance per pair of keys
//! that meet in a group.

use crate::bucket::Limits;

pub const WAYS: usize = 4;
pub const ENTRY_BYTES: usize = 16;
pub const GROUP_BYTES: usize = WAYS * ENTRY_BYTES;
const FP_MASK: u64 = (1 << 56) - 1;

/// The bytes every group starts with (all entries empty).
pub const EMPTY_GROUP: [u8; GROUP_BYTES] = [0; GROUP_BYTES];

pub fn group_key(prefix: &str, index: u32) -> String {
    format!("{prefix}{index}")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub tag: u64,
    pub x: u64,
}

impl Entry {
    fn rule(&self) -> Option<usize> {
        match (self.tag >> 56) as usize {
            0 => None,
            r => Some(r - 1),
        }
    }
}

/// Build a tag from a rule index (< 255) and a 64-bit hash.
pub fn tag(rule: usize, hash: u64) -> u64 {
    ((rule as u64 + 1) << 56) | (hash & FP_MASK)
}

/// A group's entries. Bytes of any other length (a corrupted or foreign value) read as an
/// empty group, which the next write replaces.
pub fn decode(bytes: &[u8]) -> [Entry; WAYS] {
    let mut out = [Entry::default(); WAYS];
    if bytes.len() != GROUP_BYTES {
        return out;
    }
    for (i, e) in out.iter_mut().enumerate() {
        let at = i * ENTRY_BYTES;
        let word = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at + o..at + o + 8]);
            u64::from_le_bytes(b)
        };
        *e = Entry { tag: word(0), x: word(8) };
    }
    out
}

pub fn encode(entries: &[Entry; WAYS]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GROUP_BYTES);
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.x.to_le_bytes());
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    Evict,
    Deny,
}

/// How the slot for a key was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The key's own entry.
    Found(usize),
    /// An empty entry, or one whose bucket was full (reused without loss). `shared` is true when
    /// the group held at least one live bucket of another key (a collision).
    Free { index: usize, reused: bool, shared: bool },
    /// All entries hold live buckets of other keys: this one is replaced and its debt
    /// inherited (`on_full` `EVICT`).
    Evicted(usize),
    /// No slot and `on_full` is `Deny`.
    Full,
}

/// Where key `tag` lives in `entries` at `now_ns`. `limits(rule)` gives the shape of a rule's
/// buckets (`None`: the entry belongs to no current rule, e.g. from an older configuration,
/// and is treated as full). `tie` (bits of the key's keyed hash) picks among equal eviction
/// candidates, so no slot is the predictable victim.
pub fn find_slot(
    entries: &[Entry; WAYS],
    tag: u64,
    now_ns: u64,
    limits: &dyn Fn(usize) -> Option<Limits>,
    on_full: OnFull,
    tie: usize,
) -> Slot {
    if let Some(i) = entries.iter().position(|e| e.tag == tag) {
        return Slot::Found(i);
    }
    let is_free = |e: &Entry| match e.rule().map(limits) {
        None => true,       // empty
        Some(None) => true, // no such rule any more
        Some(Some(l)) => l.is_reusable(e.x, now_ns),
    };
    let live = entries.iter().filter(|e| !is_free(e)).count();
    if let Some(i) = entries.iter().position(|e| e.tag == 0) {
        return Slot::Free { index: i, reused: false, shared: live > 0 };
    }
    if let Some(i) = entries.iter().position(is_free) {
        return Slot::Free { index: i, reused: true, shared: live > 0 };
    }
    match on_full {
        OnFull::Deny => Slot::Full,
        OnFull::Evict => {
            // The bucket that will be full soonest: the newcomer inherits the least debt. Scan
            // from a slot the key's hash picks, so equal candidates are not always slot 0.
            let victim = (0..WAYS)
                .map(|i| (tie + i) % WAYS)
                .min_by_key(|i| full_in_ns(&entries[*i], now_ns, limits))
                .unwrap_or(0);
            Slot::Evicted(victim)
        }
    }
}

/// Nanoseconds until the bucket of `e` is full again (0: full, empty, or of no current rule).
pub fn full_in_ns(e: &Entry, now_ns: u64, limits: &dyn Fn(usize) -> Option<Limits>) -> u64 {
    e.rule().and_then(limits).map_or(0, |l| l.ns_until_debt_at_most(e.x, 0, now_ns))
}

/// The state a key taking over `victim`'s slot starts from: the victim's own state for the
/// same rule, else the state of a `limits` bucket that is full no sooner than the victim's.
pub fn inherited_state(victim: &Entry, rule: usize, limits: &Limits, now_ns: u64, victim_full_in_ns: u64) -> u64 {
    if victim.rule() == Some(rule) {
        return victim.x;
    }
    limits.state_full_in(now_ns, victim_full_in_ns)
}

/// Where a key lives: group `index` of `groups`, and its tag for rule `rule`. The group comes
/// from the high 32 bits of the keyed hash, the fingerprint from the low 56, and the eviction
/// tie-break from bits 20..22 (independent of the group).
pub fn place(hash: u64, rule: usize, groups: u32) -> (u32, u64, usize) {
    let group = (((hash >> 32) * u64::from(groups)) >> 32) as u32;
    (group, tag(rule, hash), ((hash >> 20) as usize) % WAYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * S;

    fn limits(_: usize) -> Option<Limits> {
        Some(Limits { max_tokens: 10, tokens_per_fill: 1, fill_interval_ns: S })
    }

    fn live(rule: usize, fp: u64, debt: u64) -> Entry {
        let l = limits(rule).unwrap();
        Entry { tag: tag(rule, fp), x: l.virtual_tokens(NOW) + debt }
    }

    #[test]
    fn encode_decode_round_trip_and_bad_lengths_read_as_empty() {
        let e = [live(0, 1, 3), Entry::default(), live(2, 9, 1), Entry { tag: tag(0, u64::MAX), x: 7 }];
        assert_eq!(decode(&encode(&e)), e);
        assert_eq!(encode(&e).len(), GROUP_BYTES);
        assert_eq!(decode(b"short"), [Entry::default(); WAYS]);
        assert_eq!(decode(&EMPTY_GROUP), [Entry::default(); WAYS]);
    }

    #[test]
    fn tags_keep_the_rule_and_never_read_as_empty() {
        assert_ne!(tag(0, 0), 0);
        assert_eq!(Entry { tag: tag(3, u64::MAX), x: 0 }.rule(), Some(3));
        assert_ne!(tag(0, 5), tag(1, 5));
    }

    #[test]
    fn slot_order_own_then_empty_then_full_then_policy() {
        let mut g = [live(0, 1, 2), Entry::default(), live(0, 3, 0), live(0, 4, 5)];
        assert_eq!(find_slot(&g, tag(0, 1), NOW, &limits, OnFull::Deny, 0), Slot::Found(0));
        assert_eq!(
            find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Deny, 0),
            Slot::Free { index: 1, reused: false, shared: true }
        );
        g[1] = live(0, 2, 1);
        // Entry 2 has no debt: its bucket is full, so its slot is free.
        assert_eq!(
            find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Deny, 0),
            Slot::Free { index: 2, reused: true, shared: true }
        );
        g[2] = live(0, 3, 8);
        assert_eq!(find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Deny, 0), Slot::Full);
        // Evict the bucket that is full soonest (least debt): entry 1.
        assert_eq!(find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Evict, 0), Slot::Evicted(1));
        // Entries of rules that no longer exist are free.
        let gone = |r: usize| if r == 0 { limits(r) } else { None };
        g[3] = live(5, 4, 5);
        assert_eq!(
            find_slot(&g, tag(0, 9), NOW, &gone, OnFull::Deny, 0),
            Slot::Free { index: 3, reused: true, shared: true }
        );
    }

    #[test]
    fn equal_eviction_candidates_are_picked_from_the_tie_slot_not_slot_0() {
        // Four buckets with the same debt: the victim is the first candidate from `tie`.
        let g = [live(0, 1, 3), live(0, 2, 3), live(0, 3, 3), live(0, 4, 3)];
        for tie in 0..WAYS {
            assert_eq!(find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Evict, tie), Slot::Evicted(tie));
        }
        // A strictly smaller debt wins whatever the tie.
        let g = [live(0, 1, 3), live(0, 2, 3), live(0, 3, 1), live(0, 4, 3)];
        for tie in 0..WAYS {
            assert_eq!(find_slot(&g, tag(0, 9), NOW, &limits, OnFull::Evict, tie), Slot::Evicted(2));
        }
    }

    #[test]
    fn a_newcomer_inherits_the_evicted_debt_whatever_its_rule() {
        let l = limits(0).unwrap();
        let victim = live(0, 1, 4);
        // Same rule: the very state.
        assert_eq!(inherited_state(&victim, 0, &l, NOW, full_in_ns(&victim, NOW, &limits)), victim.x);
        // Another rule's shape: full no sooner than the victim.
        let other = Limits { max_tokens: 100, tokens_per_fill: 10, fill_interval_ns: 3 * S };
        let full_in = full_in_ns(&victim, NOW, &limits);
        assert_eq!(full_in, 4 * S);
        let x = inherited_state(&victim, 1, &other, NOW, full_in);
        assert!(other.ns_until_debt_at_most(x, 0, NOW) >= full_in);
        assert!(other.debt(x, NOW) <= other.max_tokens);
        // Capped at a whole bucket of debt.
        let x = inherited_state(
            &victim,
            1,
            &Limits { max_tokens: 1, tokens_per_fill: 1, fill_interval_ns: S / 10 },
            NOW,
            full_in,
        );
        assert_eq!(Limits { max_tokens: 1, tokens_per_fill: 1, fill_interval_ns: S / 10 }.debt(x, NOW), 1);
    }

    #[test]
    fn place_spreads_keys_over_groups() {
        let key = shared::hash::HashKey::new([7; 16]);
        let h = |i: u32| shared::hash::keyed(&key, &[b"rule", &i.to_le_bytes()]);
        let spread: std::collections::HashSet<u32> = (0..10_000u32).map(|i| place(h(i), 0, 1024).0).collect();
        assert!(spread.len() > 1000, "groups used: {}", spread.len());
        assert!((0..10_000u32).all(|i| place(h(i), 0, 1024).0 < 1024));
        let ties: std::collections::HashSet<usize> = (0..100u32).map(|i| place(h(i), 0, 1024).2).collect();
        assert_eq!(ties.len(), WAYS);
        assert_eq!(place(h(1), 3, 1024).1 >> 56, 4, "the tag keeps the rule");
    }
}
