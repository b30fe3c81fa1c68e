//! A value fetched periodically by one worker per proxy and published in shared data for all
//! workers: a service token, a JWKS. Generic over what is fetched: bytes plus a lifetime.
//!
//! Pure logic over the host's clock and shared data; the caller builds the request and parses
//! the answer. The rules:
//! - the first fetch happens at the first [`Fetcher::poll`] (call it from the first tick, set
//!   soon after `configure`), not after a refresh period;
//! - a value is refreshed before it expires, at `refresh_fraction` of its lifetime (0.8 by
//!   default), by whichever worker holds the [`Lease`]: one fetch per proxy, not per worker;
//! - on failure, retries back off exponentially with jitter, up to a cap; the lease holder
//!   keeps its lease while backing off, so other workers do not retry in its place;
//! - a failure never replaces the published value: the current one stays in use while valid,
//!   and [`Fetcher::current`] never returns an expired one;
//! - a fetch whose answer never comes counts as failed after `fetch_timeout` plus a margin.
//!
//! The published record (key `<prefix>value`) holds a generation counter (bumped when a fetch
//! brings different bytes), the fetch time, the expiry and the bytes. Workers poll it (cheap: one shared-data read per tick).

use crate::host::{Host, HostError, LogLevel};
use crate::lease::Lease;
use crate::shared_cell::{self, CasError};
use crate::time::{duration_ms, millis};
use std::time::{Duration, SystemTime};

/// What every worker reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Incremented on every successful fetch that brought a different value; 0 = never fetched.
    pub generation: u64,
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
    pub value: Vec<u8>,
}

const MAGIC: &[u8; 2] = b"F1";
/// The record before the first fetch.
const EMPTY: &[u8] = b"-";

impl Published {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(26 + self.value.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.fetched_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// `None` for the empty initial record and for anything unreadable.
    pub fn decode(bytes: &[u8]) -> Option<Published> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let word = |i: usize| -> Option<u64> { Some(u64::from_be_bytes(rest.get(i * 8..i * 8 + 8)?.try_into().ok()?)) };
        Some(Published {
            generation: word(0)?,
            fetched_at_ms: word(1)?,
            expires_at_ms: word(2)?,
            value: rest.get(24..)?.to_vec(),
        })
    }

    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.generation > 0 && millis(now) < self.expires_at_ms
    }

    /// When a refresh is due: `fraction` of the way from fetch to expiry.
    pub fn refresh_at_ms(&self, fraction: f64) -> u64 {
        let lifetime = self.expires_at_ms.saturating_sub(self.fetched_at_ms);
        self.fetched_at_ms.saturating_add((lifetime as f64 * fraction) as u64)
    }

    /// Time left before expiry (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(millis(now)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FetchPolicy {
    /// In (0, 1]: refresh at this fraction of the lifetime.
    pub refresh_fraction: f64,
    /// First retry delay after a failure; doubles per consecutive failure.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The HTTP call's timeout; an answer that has not come after it (plus a margin) is a failure.
    pub fetch_timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            refresh_fraction: 0.8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

impl FetchPolicy {
    /// Long enough to cover a fetch and the backoff between retries while the holder renews
    /// on every tick; short enough that a dead holder is replaced promptly.
    pub fn lease_duration(&self) -> Duration {
        self.fetch_timeout + Duration::from_secs(5)
    }
}

/// The outcome of one fetch, as the caller parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchResult {
    /// The value and how long it is valid from now.
    Fetched { value: Vec<u8>, lifetime: Duration },
    /// Why not (for the log; never contains the secret or the value).
    Failed(String),
}

/// What [`Fetcher::on_response`] did with an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Published {
        generation: u64,
    },
    /// Failed; the next attempt is in `retry_in`.
    Failed {
        retry_in: Duration,
    },
    /// Fetched, but publishing to shared data failed; retried like a failure.
    NotPublished {
        retry_in: Duration,
    },
}

/// Why a fetch is due ahead of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Force {
    /// Whatever was published since.
    Asked,
    /// Until a record other than the one fetched at this time (0: none) is published.
    UnlessReplaced(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    token: u32,
    deadline_ms: u64,
}

/// One worker's side of a periodic fetch.
#[derive(Debug)]
pub struct Fetcher {
    value_key: String,
    lease: Lease,
    policy: FetchPolicy,
    in_flight: Option<InFlight>,
    /// Next delay after a failure (doubles up to the cap).
    backoff: Duration,
    /// No attempt before this instant (after a failure); 0 = none pending.
    retry_at_ms: u64,
    rng: u64,
    /// A refresh was asked for: due regardless of the schedule.
    forced: Option<Force>,
}

/// Margin past the HTTP call's own timeout before a missing answer counts as failed.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

impl Fetcher {
    /// `key_prefix` names this fetch's two keys (`<prefix>value`, `<prefix>lease`); make it
    /// depend on the configuration, so a changed configuration never reads an old value.
    pub fn new(key_prefix: &str, holder: u64, policy: FetchPolicy) -> Fetcher {
        Fetcher {
            value_key: format!("{key_prefix}value"),
            lease: Lease::new(format!("{key_prefix}lease"), holder, policy.lease_duration()),
            policy,
            in_flight: None,
            backoff: policy.backoff_base,
            retry_at_ms: 0,
            rng: holder | 1,
            forced: None,
        }
    }

    /// Create the shared keys. From `configure` only (see [`crate::shared_cell`]).
    pub fn ensure_exists(&self, host: &dyn Host) -> Result<(), HostError> {
        // Not empty: Envoy hands an empty value back as absent, which `update` reads as Missing.
        shared_cell::ensure_exists(host, &self.value_key, EMPTY)?;
        self.lease.ensure_exists(host)
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether `token` is the answer this fetch waits for.
    pub fn awaits(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|f| f.token == token)
    }

    /// The published record, valid or not.
    pub fn published(&self, host: &dyn Host) -> Option<Published> {
        host.shared_data(&self.value_key).0.and_then(|b| Published::decode(&b))
    }

    /// The published value if still valid at `now`; never an expired one.
    pub fn current(&self, host: &dyn Host, now: SystemTime) -> Option<Published> {
        self.published(host).filter(|p| p.is_valid_at(now))
    }

    /// Call on every tick. `true`: this worker must fetch now (then call [`Fetcher::started`]
    /// with the call's token, or [`Fetcher::dispatch_failed`]).
    pub fn poll(&mut self, host: &dyn Host, now: SystemTime) -> bool {
        let now_ms = millis(now);
        if let Some(f) = self.in_flight {
            if now_ms < f.deadline_ms {
                let _ = self.lease.acquire(host, now);
                return false;
            }
            // The answer never came: a failure.
            self.in_flight = None;
            let retry_in = self.fail(now_ms);
            host.log(LogLevel::Warn, &format!("fetch: no answer within the timeout; retrying in {retry_in:?}"));
        }
        if self.retry_at_ms > now_ms {
            // Backing off: keep the lease so no other worker retries in our place.
            if self.lease.is_held(host, now) {
                let _ = self.lease.acquire(host, now);
            }
            return false;
        }
        if !self.is_due(host, now_ms) {
            // Someone refreshed (maybe us): forget our backoff.
            self.retry_at_ms = 0;
            self.backoff = self.policy.backoff_base;
            return false;
        }
        if !matches!(self.lease.acquire(host, now), Ok(true)) {
            return false;
        }
        // Look again now that the lease is ours: a holder publishes before it releases, so a
        // fetch that landed between our first look and our taking the lease shows here.
        // Without this, a worker that read the old record just before another worker's
        // answer arrived would fetch again right after it.
        if self.is_due(host, now_ms) {
            return true;
        }
        let _ = self.lease.release(host);
        false
    }

    /// A fetch is asked for and no newer record has landed since, or the published value has
    /// reached its refresh time (or there is none yet).
    fn is_due(&mut self, host: &dyn Host, now_ms: u64) -> bool {
        let published = self.published(host);
        let fetched_at_ms = published.as_ref().map_or(0, |p| p.fetched_at_ms);
        if self.forced.is_some_and(|f| matches!(f, Force::UnlessReplaced(seen) if seen != fetched_at_ms)) {
            // Another worker fetched since we asked: that answers it.
            self.forced = None;
        }
        self.forced.is_some()
            || match published {
                Some(p) if p.generation > 0 => now_ms >= p.refresh_at_ms(self.policy.refresh_fraction),
                _ => true,
            }
    }

    /// Ask for a fetch at the next [`Fetcher::poll`], ahead of the schedule (e.g. a JWKS key
    /// rotation noticed by an unknown `kid`). The caller makes sure one worker of the proxy
    /// asks (jwt-auth claims a proxy-wide refetch budget first). A fetch in flight or a
    /// backoff after a failure is not cut short. Cleared by the next answer.
    pub fn refresh_soon(&mut self) {
        self.forced = Some(Force::Asked);
    }

    /// Ask for a fetch because the record fetched at `seen_fetched_at_ms` (0: none) will not
    /// do, unless a record fetched since, by any worker, replaces it first: every worker that
    /// saw the bad record may ask, and the proxy still fetches once. Otherwise as
    /// [`Fetcher::refresh_soon`].
    pub fn refresh_unless_replaced(&mut self, seen_fetched_at_ms: u64) {
        self.forced = Some(Force::UnlessReplaced(seen_fetched_at_ms));
    }

    pub fn started(&mut self, token: u32, now: SystemTime) {
        let wait = self.policy.fetch_timeout + ANSWER_MARGIN;
        let deadline_ms = millis(now).saturating_add(duration_ms(wait));
        self.in_flight = Some(InFlight { token, deadline_ms });
    }

    /// The host refused to dispatch the call (e.g. unknown cluster): a failure.
    pub fn dispatch_failed(&mut self, now: SystemTime) -> Duration {
        self.fail(millis(now))
    }

    /// An HTTP-call answer for this root context. `None` when `token` is not our fetch (another
    /// call, or an answer that came after we gave up on it).
    pub fn on_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        now: SystemTime,
        result: FetchResult,
    ) -> Option<Outcome> {
        match self.in_flight {
            Some(f) if f.token == token => self.in_flight = None,
            _ => return None,
        }
        self.forced = None;
        let now_ms = millis(now);
        match result {
            FetchResult::Failed(_) => Some(Outcome::Failed { retry_in: self.fail(now_ms) }),
            FetchResult::Fetched { value, lifetime } => {
                let lifetime_ms = duration_ms(lifetime);
                let expires_at_ms = now_ms.saturating_add(lifetime_ms);
                let published = shared_cell::update(host, &self.value_key, 8, |bytes| {
                    // The same bytes again keep their generation: readers that key work on it
                    // (parsed keys, caches) keep it; `fetched_at_ms` still says a fetch landed.
                    let generation = match Published::decode(bytes) {
                        Some(p) if p.generation > 0 && p.value == value => p.generation,
                        previous => previous.map_or(0, |p| p.generation).saturating_add(1),
                    };
                    let record = Published { generation, fetched_at_ms: now_ms, expires_at_ms, value: value.clone() };
                    (Some(record.encode()), generation)
                });
                match published {
                    Ok(u) => {
                        self.retry_at_ms = 0;
                        self.backoff = self.policy.backoff_base;
                        // Done until the next refresh: let any worker take the next one.
                        let _ = self.lease.release(host);
                        Some(Outcome::Published { generation: u.result })
                    }
                    Err(e) => {
                        let retry_in = self.fail(now_ms);
                        host.log(LogLevel::Error, &format!("fetch: cannot publish to shared data: {e}"));
                        Some(Outcome::NotPublished { retry_in })
                    }
                }
            }
        }
    }

    /// Schedule the next attempt after a failure: equal jitter over the current backoff
    /// (half fixed, half random), then double it up to the cap.
    fn fail(&mut self, now_ms: u64) -> Duration {
        let base = self.backoff.min(self.policy.backoff_max);
        let half = base / 2;
        let jitter_ms = match duration_ms(half) {
            0 => 0,
            span => self.next_random() % (span + 1),
        };
        let delay = half + Duration::from_millis(jitter_ms);
        self.retry_at_ms = now_ms.saturating_add(duration_ms(delay));
        self.backoff = (base * 2).min(self.policy.backoff_max);
        delay
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: jitter only, not security.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The timer of a periodic fetch: a first tick soon after `configure`, so the first fetch
/// happens at start rather than a period later, then one every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticker {
    first: Duration,
    period: Duration,
    started: bool,
}

impl Ticker {
    pub const fn new(first: Duration, period: Duration) -> Ticker {
        Ticker { first, period, started: false }
    }

    /// From `configure`: arm the first, short tick.
    pub fn start(&mut self, host: &dyn Host) -> Result<(), HostError> {
        self.started = false;
        host.set_tick_period(self.first)
    }

    /// From `on_tick`: after the first tick, settle on the regular period.
    pub fn on_tick(&mut self, host: &dyn Host, name: &str) {
        if !self.started {
            self.started = true;
            if let Err(e) = host.set_tick_period(self.period) {
                host.log(LogLevel::Error, &format!("{name}: cannot set the timer period: {e}"));
            }
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Published { generation } => write!(f, "published generation {generation}"),
            Outcome::Failed { retry_in } => write!(f, "failed, retrying in {retry_in:?}"),
            Outcome::NotPublished { retry_in } => write!(f, "not published, retrying in {retry_in:?}"),
        }
    }
}

impl From<CasError> for FetchResult {
    fn from(e: CasError) -> Self {
        FetchResult::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> FetchPolicy {
        FetchPolicy { refresh_fraction: 0.8, backoff_base: S, backoff_max: 8 * S, fetch_timeout: 2 * S }
    }

    fn worker(h: &MockHost, id: u64) -> Fetcher {
        let f = Fetcher::new("t/", id, policy());
        f.ensure_exists(h).unwrap();
        f
    }

    /// Poll; when due, "dispatch" through the mock so the call is recorded; return its token.
    fn tick(h: &MockHost, f: &mut Fetcher) -> Option<u32> {
        if !f.poll(h, h.now()) {
            return None;
        }
        let token = h.dispatch_http_call("c", &[(":method", "GET")], None, policy().fetch_timeout).unwrap();
        f.started(token, h.now());
        Some(token)
    }

    fn ok(value: &str, lifetime: Duration) -> FetchResult {
        FetchResult::Fetched { value: value.as_bytes().to_vec(), lifetime }
    }

    #[test]
    fn first_fetch_at_the_first_poll_and_published_for_all() {
        let h = MockHost::new();
        let (mut a, b) = (worker(&h, 1), worker(&h, 2));
        assert!(a.current(&h, h.now()).is_none());
        let t = tick(&h, &mut a).expect("fetch at once");
        assert_eq!(h.http_calls().len(), 1);
        let out = a.on_response(&h, t, h.now(), ok("tok1", 10 * S)).unwrap();
        assert_eq!(out, Outcome::Published { generation: 1 });
        let seen = b.current(&h, h.now()).expect("other worker sees it");
        assert_eq!(seen.value, b"tok1");
        assert_eq!(seen.remaining(h.now()), 10 * S);
    }

    #[test]
    fn one_fetch_per_proxy_not_per_worker() {
        let h = MockHost::new();
        let mut workers: Vec<Fetcher> = (1..=4).map(|i| worker(&h, i)).collect();
        // Over 100 s of 1-second ticks with 10-second tokens, refreshed at 8 s.
        for _ in 0..100 {
            for w in workers.iter_mut() {
                if let Some(t) = tick(&h, w) {
                    w.on_response(&h, t, h.now(), ok("tok", 10 * S)).unwrap();
                }
            }
            h.advance(S);
        }
        let calls = h.http_calls().len();
        assert!((12..=14).contains(&calls), "one fetch per 8 s refresh period, got {calls}");
    }

    /// A host on which `between` runs just before the `nth` call made through it (1-based):
    /// another worker acting in the middle of one call into the fetcher, as real workers do.
    struct Interleaved<'a> {
        host: &'a MockHost,
        calls: std::cell::Cell<u32>,
        nth: u32,
        between: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    }
    impl crate::host::HostWrapper for Interleaved<'_> {
        fn inner(&self) -> &dyn Host {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() == self.nth {
                if let Some(between) = self.between.borrow_mut().take() {
                    between();
                }
            }
            self.host
        }
    }

    #[test]
    fn a_worker_that_read_the_old_value_does_not_fetch_after_anothers_answer_lands() {
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("tok1", 10 * S)).unwrap();
        h.advance(8 * S);
        let t = tick(&h, &mut a).expect("a refreshes at 8 s");
        // b's tick reads the record (due: a's answer has not landed), then, before b takes the
        // lease, a's answer lands: a publishes and releases the lease.
        let b_host = Interleaved {
            host: &h,
            calls: std::cell::Cell::new(0),
            nth: 2,
            between: std::cell::RefCell::new(Some(Box::new(|| {
                let out = a.on_response(&h, t, h.now(), ok("tok2", 10 * S));
                assert_eq!(out, Some(Outcome::Published { generation: 2 }));
            }))),
        };
        assert!(!b.poll(&b_host, h.now()), "the value b read is refreshed already: no second fetch");
        assert!(b_host.between.borrow().is_none(), "a's answer landed during b's tick");
        assert_eq!(h.http_calls().len(), 2, "one fetch per refresh");
        assert_eq!(b.lease().record(&h), Some(crate::lease::LeaseRecord::FREE), "b gave the lease back");
        h.advance(8 * S);
        assert!(tick(&h, &mut b).is_some(), "b takes the next refresh");
    }

    #[test]
    fn a_worker_whose_time_was_read_before_another_took_the_lease_does_not_fetch_too() {
        // Each worker reads the time once per callback: b's reading can be older than a's.
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        let b_now = h.now();
        h.advance(Duration::from_millis(3));
        assert!(tick(&h, &mut a).is_some(), "a takes the lease at its own, later, reading");
        assert!(!b.poll(&h, b_now), "a holds the lease: b's older reading does not make it free");
    }

    #[test]
    fn workers_that_saw_the_same_bad_record_fetch_once() {
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("bad", 10 * S)).unwrap();
        let bad = a.published(&h).unwrap().fetched_at_ms;
        h.advance(S);
        // Both find the record unusable and ask; a fetches first and replaces it.
        a.refresh_unless_replaced(bad);
        b.refresh_unless_replaced(bad);
        let t = tick(&h, &mut a).expect("a asked: due at once");
        assert!(tick(&h, &mut b).is_none(), "a holds the lease");
        h.advance(Duration::from_millis(10));
        a.on_response(&h, t, h.now(), ok("good", 10 * S)).unwrap();
        assert!(tick(&h, &mut b).is_none(), "the record b asked about is replaced: no second fetch");
        assert_eq!(h.http_calls().len(), 2);
        h.advance(S);
        assert!(tick(&h, &mut b).is_none(), "and b's ask is gone, not pending");
        // A plain ask (jwt-auth's, once per proxy by its own budget) fetches whatever landed.
        b.refresh_soon();
        assert!(tick(&h, &mut b).is_some());
    }

    #[test]
    fn concurrent_due_workers_elect_one_fetcher() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        let mut b = worker(&h, 2);
        assert!(tick(&h, &mut a).is_some());
        assert!(tick(&h, &mut b).is_none(), "a holds the lease while its fetch is in flight");
        assert_eq!(h.http_calls().len(), 1);
    }

    #[test]
    fn refresh_at_the_configured_fraction_not_before() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("tok1", 10 * S)).unwrap();
        h.advance(7_999 * Duration::from_millis(1));
        assert!(tick(&h, &mut a).is_none(), "7.999 s: not due");
        h.advance(Duration::from_millis(1));
        let t = tick(&h, &mut a).expect("8 s = 80% of 10 s: due");
        assert_eq!(a.current(&h, h.now()).unwrap().value, b"tok1", "old value still served while refreshing");
        a.on_response(&h, t, h.now(), ok("tok2", 10 * S)).unwrap();
        let p = a.current(&h, h.now()).unwrap();
        assert_eq!((p.value.as_slice(), p.generation), (&b"tok2"[..], 2));
    }

    #[test]
    fn failure_keeps_the_valid_value_and_never_serves_an_expired_one() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("tok1", 10 * S)).unwrap();
        h.advance(8 * S);
        let t = tick(&h, &mut a).unwrap();
        let out = a.on_response(&h, t, h.now(), FetchResult::Failed("503".into())).unwrap();
        assert!(matches!(out, Outcome::Failed { .. }));
        assert_eq!(a.current(&h, h.now()).unwrap().value, b"tok1", "still valid: kept");
        h.advance(2 * S - Duration::from_millis(1));
        assert!(a.current(&h, h.now()).is_some());
        h.advance(Duration::from_millis(1));
        assert!(a.current(&h, h.now()).is_none(), "expired: never handed out");
        assert_eq!(a.published(&h).unwrap().value, b"tok1", "record kept, just not valid");
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let h = MockHost::new();
        let mut a = worker(&h, 7);
        let mut delays = Vec::new();
        for _ in 0..8 {
            // Advance until the fetcher asks again, in 10 ms steps.
            let start = h.now();
            let t = loop {
                if let Some(t) = tick(&h, &mut a) {
                    break t;
                }
                h.advance(Duration::from_millis(10));
            };
            if !delays.is_empty() || start != h.now() {
                delays.push(h.now().duration_since(start).unwrap());
            }
            let out = a.on_response(&h, t, h.now(), FetchResult::Failed("x".into())).unwrap();
            let Outcome::Failed { retry_in } = out else { panic!("{out:?}") };
            // Equal jitter: within [backoff/2, backoff], backoff = min(1 s * 2^n, 8 s).
            let n = delays.len() as u32;
            let cap = (S * 2u32.pow(n.min(3))).min(8 * S);
            assert!(
                retry_in >= cap / 2 && retry_in <= cap,
                "attempt {n}: {retry_in:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        assert_eq!(h.http_calls().len(), 8);
        // The waits observed match the scheduled delays (10 ms tick granularity).
        assert!(delays.iter().all(|d| *d <= 8 * S + Duration::from_millis(10)), "{delays:?}");
    }

    #[test]
    fn jitter_differs_between_workers() {
        let mut a = Fetcher::new("x/", 0x1234, policy());
        let mut b = Fetcher::new("x/", 0x9876_5432, policy());
        let da: Vec<_> = (0..4).map(|_| a.fail(0)).collect();
        let db: Vec<_> = (0..4).map(|_| b.fail(0)).collect();
        assert_ne!(da, db);
    }

    #[test]
    fn success_resets_the_backoff() {
        let h = MockHost::new();
        let mut a = worker(&h, 3);
        for _ in 0..4 {
            let t = loop {
                if let Some(t) = tick(&h, &mut a) {
                    break t;
                }
                h.advance(Duration::from_millis(100));
            };
            a.on_response(&h, t, h.now(), FetchResult::Failed("x".into())).unwrap();
        }
        let t = loop {
            if let Some(t) = tick(&h, &mut a) {
                break t;
            }
            h.advance(Duration::from_millis(100));
        };
        a.on_response(&h, t, h.now(), ok("tok", 10 * S)).unwrap();
        h.advance(8 * S);
        let t = tick(&h, &mut a).unwrap();
        let Some(Outcome::Failed { retry_in }) = a.on_response(&h, t, h.now(), FetchResult::Failed("x".into())) else {
            panic!()
        };
        assert!(retry_in <= S, "back to the base after a success: {retry_in:?}");
    }

    #[test]
    fn backing_off_holder_keeps_the_lease_so_others_do_not_retry_in_its_place() {
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), FetchResult::Failed("x".into())).unwrap();
        // Every tick for 20 s: only a's retries go out, spaced by its backoff.
        for _ in 0..200 {
            h.advance(Duration::from_millis(100));
            assert!(tick(&h, &mut b).is_none(), "b never fetches while a holds the lease");
            if let Some(t) = tick(&h, &mut a) {
                a.on_response(&h, t, h.now(), FetchResult::Failed("x".into())).unwrap();
            }
        }
        let calls = h.http_calls().len();
        assert!((3..=8).contains(&calls), "backoff 1,2,4,8,8 s: {calls} calls in 20 s");
    }

    #[test]
    fn a_stuck_fetcher_is_replaced_after_its_lease_expires() {
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        assert!(tick(&h, &mut a).is_some());
        // a's VM is stuck: it never ticks again. b keeps asking.
        let mut took_over_after = None;
        for i in 1..=100 {
            h.advance(Duration::from_millis(100));
            if tick(&h, &mut b).is_some() {
                took_over_after = Some(Duration::from_millis(100) * i);
                break;
            }
        }
        let after = took_over_after.expect("b takes over");
        assert_eq!(after, policy().lease_duration(), "exactly when the lease expires");
    }

    #[test]
    fn a_missing_answer_counts_as_failure_after_the_timeout() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        let t = tick(&h, &mut a).unwrap();
        h.advance(policy().fetch_timeout);
        assert!(tick(&h, &mut a).is_none(), "still waiting within the margin");
        h.advance(ANSWER_MARGIN);
        assert!(!a.poll(&h, h.now()), "gave up; now backing off");
        assert!(!a.in_flight());
        assert!(h.logs().iter().any(|(_, m)| m.contains("no answer")));
        // The late answer is ignored.
        assert_eq!(a.on_response(&h, t, h.now(), ok("late", 10 * S)), None);
        assert!(a.current(&h, h.now()).is_none());
    }

    #[test]
    fn unknown_tokens_are_ignored() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        assert_eq!(a.on_response(&h, 99, h.now(), ok("x", S)), None);
        let t = tick(&h, &mut a).unwrap();
        assert_eq!(a.on_response(&h, t + 1, h.now(), ok("x", S)), None);
        assert!(a.in_flight());
    }

    #[test]
    fn dispatch_failure_backs_off() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        assert!(a.poll(&h, h.now()));
        let d = a.dispatch_failed(h.now());
        assert!(d >= S / 2 && d <= S);
        assert!(!a.poll(&h, h.now()));
        h.advance(d);
        assert!(a.poll(&h, h.now()));
    }

    #[test]
    fn the_same_value_again_keeps_its_generation_and_renews_its_lifetime() {
        let h = MockHost::new();
        let mut a = worker(&h, 1);
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("keys", 10 * S)).unwrap();
        h.advance(8 * S);
        let t = tick(&h, &mut a).expect("refresh due");
        assert_eq!(a.on_response(&h, t, h.now(), ok("keys", 10 * S)), Some(Outcome::Published { generation: 1 }));
        let p = a.published(&h).unwrap();
        assert_eq!((p.generation, p.fetched_at_ms), (1, millis(h.now())), "same generation, new fetch time");
        h.advance(5 * S);
        assert!(a.current(&h, h.now()).is_some(), "the lifetime starts again from the new fetch");
        h.advance(3 * S);
        let t = tick(&h, &mut a).expect("refresh due");
        assert_eq!(a.on_response(&h, t, h.now(), ok("other", 10 * S)), Some(Outcome::Published { generation: 2 }));
    }

    #[test]
    fn generations_increase_across_workers() {
        let h = MockHost::new();
        let (mut a, mut b) = (worker(&h, 1), worker(&h, 2));
        let t = tick(&h, &mut a).unwrap();
        a.on_response(&h, t, h.now(), ok("1", 10 * S)).unwrap();
        h.advance(8 * S);
        let t = tick(&h, &mut b).expect("lease was released after the success: b may refresh");
        assert_eq!(b.on_response(&h, t, h.now(), ok("2", 10 * S)), Some(Outcome::Published { generation: 2 }));
        assert_eq!(a.current(&h, h.now()).unwrap().value, b"2");
    }

    #[test]
    fn record_round_trips_and_garbage_reads_as_nothing() {
        let p = Published { generation: 3, fetched_at_ms: 10, expires_at_ms: 20, value: b"\x00\xffv".to_vec() };
        assert_eq!(Published::decode(&p.encode()), Some(p.clone()));
        assert_eq!(p.refresh_at_ms(0.8), 18);
        assert_eq!(Published::decode(b""), None);
        assert_eq!(Published::decode(b"F1short"), None);
        assert_eq!(Published::decode(b"xx00000000000000000000000000"), None);
    }
}
