//! "One worker per proxy does X": a lease with an expiry in shared data, taken and renewed
//! with compare-and-swap.
//!
//! Every worker VM has its own root context and its own `on_tick`, so a job that must run once
//! per proxy (fetch a token, a JWKS) needs an election. The lease is one shared-data key holding
//! `<holder id hex>:<expiry ms since the epoch>`. A worker takes it when it is free or expired,
//! renews it while it holds it, and releases it when done. A holder that is stuck or whose VM
//! died stops renewing, its lease expires, and the next worker to ask takes over: nobody waits
//! on a dead holder for longer than the lease duration, nor on a record that claims more
//! than the lease duration plus [`CLOCK_SKEW`] from now (which no live holder can have
//! written: a holder claims one duration from its own reading of the clock, which may be a
//! little ahead of ours, as each worker reads the time once per callback). A record left
//! across a clock stepped back, or written ahead by another plugin, is honoured for at most
//! the duration plus that second.
//!
//! Holder ids must be unique per worker VM: root context ids repeat across workers (each VM
//! numbers its own contexts), so mix in a per-VM random nonce ([`holder_id`]).
//!
//! Create the key from `RootFilter::configure` ([`Lease::ensure_exists`]), before traffic, as
//! [`crate::shared_cell`] requires.

use crate::host::{Host, HostError};
use crate::shared_cell::{self, CasError};
use crate::time::{duration_ms, millis};
use std::time::{Duration, SystemTime};

/// A holder id unique per worker VM: the root context id mixed with a per-VM nonce (a random
/// value from the host's WASI `random_get`, through std's `RandomState`, and the start time).
/// Never 0 (0 means "free").
pub fn holder_id(root_context_id: u32, now: SystemTime) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(root_context_id);
    h.write_u64(millis(now));
    h.write_u128(now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish().max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// 0: nobody.
    pub holder: u64,
    pub expires_at_ms: u64,
}

impl LeaseRecord {
    pub const FREE: LeaseRecord = LeaseRecord { holder: 0, expires_at_ms: 0 };

    pub fn encode(&self) -> Vec<u8> {
        format!("{:x}:{}", self.holder, self.expires_at_ms).into_bytes()
    }

    /// Unreadable bytes read as a free lease: a corrupted key can be taken over, never wedges.
    pub fn decode(bytes: &[u8]) -> LeaseRecord {
        let parse = || -> Option<LeaseRecord> {
            let text = std::str::from_utf8(bytes).ok()?;
            let (holder, expiry) = text.split_once(':')?;
            Some(LeaseRecord { holder: u64::from_str_radix(holder, 16).ok()?, expires_at_ms: expiry.parse().ok()? })
        };
        parse().unwrap_or(LeaseRecord::FREE)
    }

    /// Held by another live holder: one whose claim has not expired and is no longer than
    /// any holder can make (`latest_ms`). A claim beyond that (another plugin of the VM wrote
    /// the key, or a dead holder's record outlived a clock stepped back) is corrupt and reads
    /// as free: it would otherwise keep every worker out.
    fn held_by_other(&self, me: u64, now_ms: u64, latest_ms: u64) -> bool {
        self.holder != 0 && self.holder != me && now_ms < self.expires_at_ms && self.expires_at_ms <= latest_ms
    }
}

/// One worker's handle on a lease key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    key: String,
    holder: u64,
    duration: Duration,
}

/// CAS attempts per take/renew/release; workers rarely collide, and losing means "not mine".
const ATTEMPTS: u32 = 4;

/// How far another holder's reading of the clock may be ahead of ours and its claim still
/// honoured. Readings differ by the time between a worker's first host call of a callback
/// and its take (milliseconds, more on an oversubscribed machine); a second is plenty.
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);

impl Lease {
    pub fn new(key: impl Into<String>, holder: u64, duration: Duration) -> Lease {
        Lease { key: key.into(), holder: holder.max(1), duration }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn holder(&self) -> u64 {
        self.holder
    }

    /// Create the key (free) if absent. From `configure` only.
    pub fn ensure_exists(&self, host: &dyn Host) -> Result<(), HostError> {
        shared_cell::ensure_exists(host, &self.key, &LeaseRecord::FREE.encode())
    }

    /// Take the lease if it is free or expired, or renew it if it is ours. `Ok(true)`: this
    /// worker holds it until `now + duration`. `Ok(false)`: another live holder has it.
    pub fn acquire(&self, host: &dyn Host, now: SystemTime) -> Result<bool, CasError> {
        let now_ms = millis(now);
        let until = now_ms.saturating_add(duration_ms(self.duration));
        // Another holder's claim may reach a little past `until`: its clock reading can be
        // ahead of `now` (read at the start of our callback, maybe before it wrote).
        let latest = until.saturating_add(duration_ms(CLOCK_SKEW));
        let me = self.holder;
        shared_cell::update(host, &self.key, ATTEMPTS, |bytes| {
            let current = LeaseRecord::decode(bytes);
            if current.held_by_other(me, now_ms, latest) {
                (None, false)
            } else {
                (Some(LeaseRecord { holder: me, expires_at_ms: until }.encode()), true)
            }
        })
        .map(|u| u.result)
    }

    /// Is the lease ours and unexpired (no write)?
    pub fn is_held(&self, host: &dyn Host, now: SystemTime) -> bool {
        match host.shared_data(&self.key) {
            (Some(bytes), _) => {
                let r = LeaseRecord::decode(&bytes);
                r.holder == self.holder && millis(now) < r.expires_at_ms
            }
            _ => false,
        }
    }

    /// Give the lease up if it is ours (another worker may take it at once). `Ok(false)`: it
    /// was not ours (any more).
    pub fn release(&self, host: &dyn Host) -> Result<bool, CasError> {
        let me = self.holder;
        shared_cell::update(host, &self.key, ATTEMPTS, |bytes| {
            if LeaseRecord::decode(bytes).holder == me {
                (Some(LeaseRecord::FREE.encode()), true)
            } else {
                (None, false)
            }
        })
        .map(|u| u.result)
    }

    /// The current record, as every worker sees it.
    pub fn record(&self, host: &dyn Host) -> Option<LeaseRecord> {
        host.shared_data(&self.key).0.map(|b| LeaseRecord::decode(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    const SECOND: Duration = Duration::from_secs(1);

    fn two_workers(h: &MockHost) -> (Lease, Lease) {
        let a = Lease::new("l", 0xa, 5 * SECOND);
        let b = Lease::new("l", 0xb, 5 * SECOND);
        a.ensure_exists(h).unwrap();
        b.ensure_exists(h).unwrap();
        (a, b)
    }

    #[test]
    fn one_holder_at_a_time() {
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        assert!(a.acquire(&h, h.now()).unwrap());
        assert!(!b.acquire(&h, h.now()).unwrap(), "held by a");
        assert!(a.is_held(&h, h.now()));
        assert!(!b.is_held(&h, h.now()));
        assert_eq!(a.record(&h).unwrap().holder, 0xa);
    }

    #[test]
    fn renewal_extends_and_keeps_others_out() {
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        assert!(a.acquire(&h, h.now()).unwrap());
        h.advance(4 * SECOND);
        assert!(a.acquire(&h, h.now()).unwrap(), "renewed");
        h.advance(4 * SECOND);
        assert!(!b.acquire(&h, h.now()).unwrap(), "8 s after the first take, still a's thanks to renewal");
    }

    #[test]
    fn a_dead_holders_lease_expires_and_another_takes_over() {
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        assert!(a.acquire(&h, h.now()).unwrap());
        h.advance(5 * SECOND - Duration::from_millis(1));
        assert!(!b.acquire(&h, h.now()).unwrap());
        h.advance(Duration::from_millis(1));
        assert!(b.acquire(&h, h.now()).unwrap(), "a stopped renewing: expired");
        assert!(!a.is_held(&h, h.now()));
        assert!(!a.acquire(&h, h.now()).unwrap(), "a comes back and finds b holding");
    }

    #[test]
    fn release_frees_only_ones_own_lease() {
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        assert!(a.acquire(&h, h.now()).unwrap());
        assert!(!b.release(&h).unwrap(), "not b's to release");
        assert!(a.is_held(&h, h.now()));
        assert!(a.release(&h).unwrap());
        assert!(b.acquire(&h, h.now()).unwrap(), "free at once after release");
    }

    #[test]
    fn missing_key_is_an_error_not_a_silent_take() {
        let h = MockHost::new();
        let a = Lease::new("never-created", 1, SECOND);
        assert_eq!(a.acquire(&h, h.now()), Err(CasError::Missing));
    }

    #[test]
    fn corrupted_record_reads_as_free() {
        let h = MockHost::new();
        let (a, _) = two_workers(&h);
        h.set_shared_data("l", b"\xffgarbage", None).unwrap();
        assert!(a.acquire(&h, h.now()).unwrap());
        assert_eq!(LeaseRecord::decode(b"zz:1"), LeaseRecord::FREE);
        let r = LeaseRecord { holder: 0xdead, expires_at_ms: 42 };
        assert_eq!(LeaseRecord::decode(&r.encode()), r);
    }

    #[test]
    fn a_lease_claimed_beyond_its_duration_is_taken_over_not_a_wedge() {
        // Found in review (issue 18, shared-data poisoning): a record `holder:expiry` with an
        // expiry far beyond now + duration (written by another plugin of the same vm_id, or
        // left by a dead holder across a clock stepped back) kept every worker out until
        // then: no token or JWKS fetch for the proxy for a year. No live holder can have
        // written more than now + duration + CLOCK_SKEW, so such a record is corrupt, and free.
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        let year_ms = 366 * 86_400 * 1000;
        let far = LeaseRecord { holder: 0xdead, expires_at_ms: millis(h.now()) + year_ms };
        h.set_shared_data("l", &far.encode(), None).unwrap();
        assert!(a.acquire(&h, h.now()).unwrap(), "a claim beyond the lease duration is not honoured");
        assert_eq!(a.record(&h).unwrap().holder, 0xa);
        // A live holder's claim (at most now + duration) still keeps others out.
        assert!(!b.acquire(&h, h.now()).unwrap());
        h.advance(SECOND);
        assert!(!b.acquire(&h, h.now()).unwrap(), "a's own lease is within the duration");
    }

    #[test]
    fn a_holder_whose_clock_reading_is_ahead_of_ours_still_holds_the_lease() {
        // Found in review after CI saw two token calls 1.4 ms apart with 16 workers: b read
        // the time at the start of its tick, a took the lease a few ms later by its own
        // reading, and b's take saw a's claim as beyond now + duration, "corrupt", and free.
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        let b_now = h.now();
        assert!(a.acquire(&h, b_now + Duration::from_millis(3)).unwrap());
        assert!(!b.acquire(&h, b_now).unwrap(), "a's live claim is 3 ms past b's now + duration");
        assert_eq!(a.record(&h).unwrap().holder, 0xa);
        // Up to CLOCK_SKEW past now + duration is honoured; beyond that the claim is corrupt.
        let far = LeaseRecord { holder: 0xdead, expires_at_ms: millis(b_now) + 6_000 };
        h.set_shared_data("l", &far.encode(), None).unwrap();
        assert!(!b.acquire(&h, b_now).unwrap(), "now + duration + 1 s: honoured");
        let beyond = LeaseRecord { holder: 0xdead, expires_at_ms: millis(b_now) + 6_001 };
        h.set_shared_data("l", &beyond.encode(), None).unwrap();
        assert!(b.acquire(&h, b_now).unwrap(), "past now + duration + 1 s: corrupt, taken");
    }

    #[test]
    fn lost_race_between_read_and_write_is_not_a_double_take() {
        // Worker b's CAS write lands between a's read and a's write: a retries on top of b's
        // record and finds it held.
        let h = MockHost::new();
        let (a, b) = two_workers(&h);
        let (bytes, cas) = h.shared_data("l");
        assert_eq!(LeaseRecord::decode(&bytes.unwrap()), LeaseRecord::FREE);
        assert!(b.acquire(&h, h.now()).unwrap());
        // a's stale write would fail its CAS:
        assert_eq!(h.set_shared_data("l", b"a:1", cas), Err(HostError::CasMismatch));
        assert!(!a.acquire(&h, h.now()).unwrap());
    }

    #[test]
    fn holder_ids_differ_per_vm_even_for_equal_context_ids() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ids: std::collections::BTreeSet<u64> = (0..32).map(|_| holder_id(1, t)).collect();
        assert_eq!(ids.len(), 32, "random nonce per VM");
        assert!(!ids.contains(&0));
    }
}
