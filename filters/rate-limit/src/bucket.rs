//! The bucket math: Envoy's token bucket `{max_tokens, tokens_per_fill, fill_interval}` kept as
//! ONE 64-bit number, in the style of GCRA (governor's "theoretical arrival time").
//!
//! Envoy's `TokenBucket` starts full with `max_tokens`, and every `fill_interval` adds
//! `tokens_per_fill`, never holding more than `max_tokens`. Here fills happen at the instants
//! `k × fill_interval` since the Unix epoch (`k` is the *fill epoch*), so every worker agrees
//! on them without talking to each other.
//!
//! Instead of (tokens, last_fill) the state is one counter `x`, in *token units*: the value of
//! the virtual clock `V = k × tokens_per_fill` (tokens minted since the epoch) at which the
//! bucket is full again. GCRA's TAT, measured in tokens instead of nanoseconds. Then
//!
//! - debt = max(0, x − V); tokens available = max_tokens − debt;
//! - taking a token: allowed iff debt + 1 ≤ max_tokens, and then x ← max(x, V) + 1;
//! - an unused entry (`x = 0`) is a full bucket, and any entry with `x ≤ V` is full too, so a
//!   full bucket carries no information and its slot can be reused without loss.
//!
//! Integers only, no rounding: after `m` fills a bucket has gained exactly
//! `m × tokens_per_fill` tokens (capped), which is what makes N concurrent requests admit
//! exactly the budget. `V` stays below 2^64 until the year 2500 for every rate the
//! configuration accepts (at most [`MAX_RATE_PER_SECOND`] tokens per second).

/// The highest refill rate accepted (tokens per second), so that `V` fits in 64 bits for
/// centuries: 1.8e19 / (1e9 × 3.2e7 s/year) ≈ 570 years after 1970.
pub const MAX_RATE_PER_SECOND: u64 = 1_000_000_000;

/// One rule's bucket shape, checked by the configuration (all > 0,
/// `tokens_per_fill ≤ max_tokens`: adding more than the capacity in one fill is the same as
/// filling it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ns: u64,
}

/// What taking one token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The new state when allowed (to be written), the unchanged state when not.
    pub x: u64,
    /// Tokens left after this request.
    pub remaining: u64,
    /// Until a token is available again (0 when one is); what `Retry-After` says.
    pub retry_after_ns: u64,
    /// Until the bucket is full again.
    pub full_in_ns: u64,
    /// Until the next fill.
    pub next_fill_in_ns: u64,
}

impl Limits {
    fn epoch(&self, now_ns: u64) -> u64 {
        now_ns / self.fill_interval_ns.max(1)
    }

    /// The virtual token clock at `now_ns`.
    pub fn virtual_tokens(&self, now_ns: u64) -> u64 {
        let v = u128::from(self.epoch(now_ns)) * u128::from(self.tokens_per_fill);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// Tokens owed (max_tokens − available) for state `x`.
    pub fn debt(&self, x: u64, now_ns: u64) -> u64 {
        x.saturating_sub(self.virtual_tokens(now_ns)).min(self.max_tokens)
    }

    /// Is a bucket in state `x` full (so its slot can be reused without loss)?
    pub fn is_full(&self, x: u64, now_ns: u64) -> bool {
        x <= self.virtual_tokens(now_ns)
    }

    /// Can a slot holding state `x` of this shape be reused? When the bucket is full (no
    /// loss), or when `x` owes more than `max_tokens`, which no take under this shape writes:
    /// an entry of another shape (a reload that slowed the rule) sits so far ahead of this
    /// shape's clock that it would never read as full, and held its slot for decades. A clock
    /// stepped back further than a bucket takes to fill reads live entries so too: they may
    /// then be taken over, as a full one is.
    pub fn is_reusable(&self, x: u64, now_ns: u64) -> bool {
        self.is_full(x, now_ns) || x > self.virtual_tokens(now_ns).saturating_add(self.max_tokens)
    }

    /// `x` with at most `max_tokens` of debt. Taking a token never writes more, so a larger
    /// state was not written under this shape: an entry of another rule's shape (a reload that
    /// changed a rule, a rule index that now names another rule), or a clock stepped back.
    /// Read as an empty bucket by what the answer says (Retry-After, time to full, eviction
    /// order): unbounded, those said decades. The decision is the same either way (a take is
    /// allowed iff `x < V + max_tokens`) and a refusal writes nothing, so such a state is still
    /// denied until this shape's clock reaches it; the table frees its slot instead
    /// ([`Limits::is_reusable`]).
    pub fn bounded(&self, x: u64, now_ns: u64) -> u64 {
        x.min(self.virtual_tokens(now_ns).saturating_add(self.max_tokens))
    }

    /// Nanoseconds from `now_ns` until the debt is at most `target`.
    pub fn ns_until_debt_at_most(&self, x: u64, target: u64, now_ns: u64) -> u64 {
        let x = self.bounded(x, now_ns);
        let n = self.tokens_per_fill.max(1);
        let needed = x.saturating_sub(target);
        // First epoch k with k × n ≥ needed.
        let k = u128::from(needed).div_ceil(u128::from(n));
        let at = k * u128::from(self.fill_interval_ns);
        u64::try_from(at.saturating_sub(u128::from(now_ns))).unwrap_or(u64::MAX)
    }

    /// The state of a bucket that is full again no sooner than `full_in_ns` from `now_ns`, with
    /// at most `max_tokens` of debt: what a key inherits from a bucket it evicts.
    pub fn state_full_in(&self, now_ns: u64, full_in_ns: u64) -> u64 {
        let at = u128::from(now_ns) + u128::from(full_in_ns);
        let epoch = at.div_ceil(u128::from(self.fill_interval_ns.max(1)));
        let x = u64::try_from(epoch * u128::from(self.tokens_per_fill)).unwrap_or(u64::MAX);
        x.min(self.virtual_tokens(now_ns).saturating_add(self.max_tokens))
    }

    pub fn next_fill_in_ns(&self, now_ns: u64) -> u64 {
        let next = u128::from(self.epoch(now_ns)) + 1;
        let at = next * u128::from(self.fill_interval_ns);
        u64::try_from(at.saturating_sub(u128::from(now_ns))).unwrap_or(u64::MAX)
    }

    /// Take one token from a bucket in state `x` at `now_ns`.
    pub fn take(&self, x: u64, now_ns: u64) -> Decision {
        let x = self.bounded(x, now_ns);
        let v = self.virtual_tokens(now_ns);
        let debt = x.saturating_sub(v);
        let next_fill_in_ns = self.next_fill_in_ns(now_ns);
        if debt < self.max_tokens {
            let x = x.max(v).saturating_add(1);
            Decision {
                allowed: true,
                x,
                remaining: self.max_tokens - (debt + 1),
                retry_after_ns: if debt + 1 < self.max_tokens {
                    0
                } else {
                    self.ns_until_debt_at_most(x, self.max_tokens - 1, now_ns)
                },
                full_in_ns: self.ns_until_debt_at_most(x, 0, now_ns),
                next_fill_in_ns,
            }
        } else {
            Decision {
                allowed: false,
                x,
                remaining: 0,
                retry_after_ns: self.ns_until_debt_at_most(x, self.max_tokens - 1, now_ns),
                full_in_ns: self.ns_until_debt_at_most(x, 0, now_ns),
                next_fill_in_ns,
            }
        }
    }

    /// Read-only view of a bucket (no token taken): remaining tokens and time until full.
    pub fn peek(&self, x: u64, now_ns: u64) -> (u64, u64) {
        (self.max_tokens - self.debt(x, now_ns), self.ns_until_debt_at_most(x, 0, now_ns))
    }
}

/// Whole seconds, rounded up (header values: never advertise a shorter wait than the real one).
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Envoy's token bucket, written the obvious way: (tokens, fills seen), refilled at the
    /// same fill instants. The reference the 8-byte state must equal.
    struct Reference {
        l: Limits,
        tokens: u64,
        epoch: u64,
    }

    impl Reference {
        fn new(l: Limits, now: u64) -> Self {
            Reference { l, tokens: l.max_tokens, epoch: now / l.fill_interval_ns }
        }
        fn take(&mut self, now: u64) -> bool {
            let e = now / self.l.fill_interval_ns;
            let fills = e.saturating_sub(self.epoch);
            self.epoch = self.epoch.max(e);
            self.tokens = (self.tokens + fills * self.l.tokens_per_fill).min(self.l.max_tokens);
            if self.tokens > 0 {
                self.tokens -= 1;
                true
            } else {
                false
            }
        }
    }

    fn limits(max: u64, per_fill: u64, interval_ns: u64) -> Limits {
        Limits { max_tokens: max, tokens_per_fill: per_fill, fill_interval_ns: interval_ns }
    }

    #[test]
    fn a_fresh_bucket_admits_exactly_max_tokens_then_refills_per_fill() {
        let l = limits(5, 2, S);
        let t0 = 1_700_000_000 * S + 1; // just after a fill instant
        let mut x = 0;
        for i in 0..5 {
            let d = l.take(x, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            x = d.x;
        }
        let d = l.take(x, t0 + S / 2);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, S / 2 - 1, "next fill is at the next whole second");
        assert_eq!(d.x, x, "a refused request changes nothing");
        // One fill: exactly tokens_per_fill more.
        let t1 = t0 + S;
        let mut admitted = 0;
        for _ in 0..10 {
            let d = l.take(x, t1);
            if d.allowed {
                admitted += 1;
                x = d.x;
            }
        }
        assert_eq!(admitted, 2);
        // Long idle: full again, never more than max_tokens.
        let d = l.take(x, t1 + 100 * S);
        assert_eq!(d.remaining, 4);
        assert!(l.is_full(x, t1 + 100 * S));
    }

    #[test]
    fn equals_envoys_token_bucket_on_a_random_schedule() {
        // A deterministic pseudo-random schedule of request instants (xorshift), several
        // shapes; the 8-byte state must decide exactly like the (tokens, epoch) bucket.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for l in [limits(1, 1, S), limits(10, 3, S / 4), limits(100, 100, 60 * S), limits(7, 7, 50_000_000)] {
            let mut now = 1_700_000_000 * S + rnd() % S;
            let mut reference = Reference::new(l, now);
            let mut x = 0;
            for step in 0..20_000 {
                // Mostly bursts, sometimes long gaps.
                now += match rnd() % 10 {
                    0 => rnd() % (5 * l.fill_interval_ns),
                    1..=3 => rnd() % l.fill_interval_ns,
                    _ => rnd() % (l.fill_interval_ns / 20 + 1),
                };
                let d = l.take(x, now);
                assert_eq!(d.allowed, reference.take(now), "{l:?} step {step}");
                assert_eq!(d.remaining, reference.tokens, "{l:?} step {step}");
                x = d.x;
            }
        }
    }

    #[test]
    fn retry_after_and_full_times() {
        let l = limits(3, 1, 10 * S);
        let t0 = 1_000 * 10 * S; // exactly on a fill instant
        let mut x = 0;
        for _ in 0..3 {
            x = l.take(x, t0).x;
        }
        let d = l.take(x, t0 + S);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, 9 * S);
        assert_eq!(d.full_in_ns, 29 * S);
        assert_eq!(d.next_fill_in_ns, 9 * S);
        assert_eq!(ceil_secs(d.retry_after_ns), 9);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(l.peek(x, t0 + 10 * S), (1, 20 * S));
    }

    #[test]
    fn clock_going_backwards_only_makes_it_stricter() {
        let l = limits(2, 1, S);
        let t = 1_700_000_000 * S;
        let x = l.take(l.take(0, t).x, t).x;
        assert!(!l.take(x, t - 5 * S).allowed);
        assert!(l.take(x, t + S).allowed);
    }

    #[test]
    fn a_state_of_another_shape_is_at_worst_an_empty_bucket() {
        // Regression (e2e reload.rs): 40 an hour, one token spent, then a reload made it 40 a
        // day. The state, a point on the hourly clock, read as ~24 × 40 years of debt on the
        // daily one: the key was denied for decades, with a Retry-After to match.
        let now = 1_700_000_000 * S;
        let hourly = limits(40, 40, 3_600 * S);
        let daily = limits(40, 40, 86_400 * S);
        let x = hourly.take(0, now).x;
        let d = daily.take(x, now);
        assert!(!d.allowed || d.remaining < 40);
        assert!(d.retry_after_ns <= 86_400 * S, "{} s", d.retry_after_ns / S);
        assert!(d.full_in_ns <= 86_400 * S);
        assert_eq!(daily.peek(x, now).0, 0, "read as empty, never as more than max_tokens owed");
        // A state this shape wrote is untouched.
        let y = daily.take(0, now).x;
        assert_eq!(daily.bounded(y, now), y);
        // A slot: the other shape's state is reusable, one this shape wrote (empty) is not.
        assert!(daily.is_reusable(x, now));
        let mut z = 0;
        for _ in 0..40 {
            z = daily.take(z, now).x;
        }
        assert!(!daily.take(z, now).allowed);
        assert!(!daily.is_reusable(z, now));
    }

    #[test]
    fn extreme_shapes_do_not_overflow() {
        let l = limits(u64::from(u32::MAX), u64::from(u32::MAX), 50_000_000);
        let d = l.take(0, u64::MAX - 1);
        assert!(d.allowed);
        let l = limits(u64::from(u32::MAX), 1, 366 * 86_400 * S);
        let d = l.take(u64::MAX, 1_700_000_000 * S);
        assert!(!d.allowed);
        assert!(d.retry_after_ns > 0);
    }
}
