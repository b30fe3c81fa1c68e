//! A random seed per proxy that every worker agrees on, through shared data.
//!
//! **Use it for** keying what an outsider must not predict but what needs no secrecy from the
//! proxy itself: a hash table's hash (collision flooding), a log fingerprint (so a log line is
//! no offline oracle for a weak secret), jitter. **It is not** a secret from anyone who can
//! read shared data in the VM (every plugin with the same `vm_id`), not a cryptographic key,
//! and not stable across an Envoy restart (shared data lives in the process; a new VM with
//! the same `vm_id` in the same process, e.g. after a configuration update, keeps it).
//!
//! How the workers agree, each step one host call so a test can interleave workers at every
//! point ([`Agreement::step`]):
//!
//! 1. Read [`KEY`]. A seed: done. Something else (the sentinel): go to 4.
//! 2. Absent: create it holding [`SENTINEL`] (the same bytes in every worker). Envoy
//!    CAS-protects only existing keys, so a plain write could land after another worker has
//!    already replaced its sentinel with a seed, and clobber it. So the creation carries a
//!    compare-and-swap token that cannot be the key's current one: the token of a write to
//!    another key ([`PROBE_KEY`], written then read just before). Every shared-data write takes
//!    the next token of one proxy-wide counter, so no two writes share a token (until 2^32
//!    writes wrap it around between two calls of one worker). On an absent key Envoy ignores
//!    the token and creates it; on a key another worker created meanwhile it refuses.
//! 3. Read [`KEY`] again: a seed (another worker was faster), or the sentinel and its token.
//! 4. Replace the sentinel by compare-and-swap with 32 random bytes (WASI `random_get`): the
//!    first worker wins, the others' swaps fail.
//! 5. Read [`KEY`] back: that seed is everyone's.
//!
//! Call [`agree`] once per worker from `RootFilter::configure` and keep the [`Seed`]: that is
//! the per-worker cache. After the first worker, it costs one shared-data read.

use crate::hash::{keyed, HashKey};
use crate::host::{Host, HostError};

/// The shared-data key of the seed (per `vm_id`, like all shared data).
pub const KEY: &str = "shared/seed";
/// Written (and read back) only to learn a compare-and-swap token no other key holds.
pub const PROBE_KEY: &str = "shared/seed.probe";
/// What [`KEY`] holds until a worker replaces it with a seed. Not empty: Envoy reads an empty
/// value back as absent.
pub const SENTINEL: &[u8] = b"seed pending";
const TAG: &[u8] = b"seed1:";

/// The proxy's seed. `Debug` does not show it: it is not for logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl Seed {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Four independent 64-bit words of the seed (`index` 0..4, wrapping).
    pub fn word(&self, index: usize) -> u64 {
        let i = (index % 4) * 8;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[i..i + 8]);
        u64::from_le_bytes(w)
    }

    /// A key for [`crate::hash::keyed`] for one use, named by `label` (e.g.
    /// `"token-fetch/fingerprint"`): different uses never share a key, so a value hashed for
    /// one use tells nothing about another.
    pub fn hash_key(&self, label: &str) -> HashKey {
        let mut base = [0u8; 16];
        base.copy_from_slice(&self.0[..16]);
        let base = HashKey::new(base);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&keyed(&base, &[b"hash key", label.as_bytes(), &[0]]).to_le_bytes());
        key[8..].copy_from_slice(&keyed(&base, &[b"hash key", label.as_bytes(), &[1]]).to_le_bytes());
        HashKey::new(key)
    }

    fn decode(value: &[u8]) -> Option<Seed> {
        let bytes = value.strip_prefix(TAG)?;
        Some(Seed(bytes.try_into().ok()?))
    }

    fn encode(&self) -> Vec<u8> {
        [TAG, &self.0[..]].concat()
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedError {
    /// The host gave no random bytes.
    Random(HostError),
    /// A shared-data call failed (other than a lost compare-and-swap).
    SharedData(HostError),
    /// The key holds something this build does not read as a seed after the protocol ran.
    Unrecognized,
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedError::Random(e) => write!(f, "no random bytes from the host: {e}"),
            SeedError::SharedData(e) => write!(f, "shared data: {e}"),
            SeedError::Unrecognized => write!(f, "{KEY} holds a value that is not a seed"),
        }
    }
}

/// Agree on the proxy's seed with every other worker (see the module doc).
pub fn agree(host: &dyn Host) -> Result<Seed, SeedError> {
    let mut agreement = Agreement::new();
    loop {
        if let Some(done) = agreement.step(host) {
            return done;
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Read,
    WriteProbe,
    ReadProbe,
    Create { token: u32 },
    ReadAgain,
    Replace { token: u32 },
    ReadBack,
}

/// One worker's way through the protocol, one host call per [`Agreement::step`]. Every step
/// moves forward, so it ends within seven steps.
#[derive(Debug)]
pub struct Agreement {
    step: Step,
    /// Test-only: create the key with a plain write (the interleaving test shows it fails).
    #[cfg(test)]
    unguarded: bool,
}

impl Default for Agreement {
    fn default() -> Self {
        Agreement::new()
    }
}

/// What a read of [`KEY`] found.
enum Found {
    Seed(Seed),
    Absent,
    Other { token: u32 },
}

fn read(host: &dyn Host) -> Found {
    let (value, token) = host.shared_data(KEY);
    if let Some(seed) = value.as_deref().and_then(Seed::decode) {
        return Found::Seed(seed);
    }
    match token {
        Some(token) if token != 0 => Found::Other { token },
        _ => Found::Absent,
    }
}

/// A write that lost its compare-and-swap is a normal outcome here: someone else did it.
fn written(result: Result<(), HostError>) -> Result<(), SeedError> {
    match result {
        Ok(()) | Err(HostError::CasMismatch) => Ok(()),
        Err(e) => Err(SeedError::SharedData(e)),
    }
}

impl Agreement {
    pub fn new() -> Agreement {
        Agreement {
            step: Step::Read,
            #[cfg(test)]
            unguarded: false,
        }
    }

    /// Make one host call; `Some` when the protocol is over.
    pub fn step(&mut self, host: &dyn Host) -> Option<Result<Seed, SeedError>> {
        let (next, done) = match self.step {
            Step::Read => match read(host) {
                Found::Seed(s) => (Step::Read, Some(Ok(s))),
                Found::Other { token } => (Step::Replace { token }, None),
                Found::Absent => (Step::WriteProbe, None),
            },
            Step::WriteProbe => match host.set_shared_data(PROBE_KEY, b"1", None) {
                Ok(()) => (Step::ReadProbe, None),
                Err(e) => (Step::Read, Some(Err(SeedError::SharedData(e)))),
            },
            Step::ReadProbe => match host.shared_data(PROBE_KEY) {
                (_, Some(token)) if token != 0 => (Step::Create { token }, None),
                _ => (Step::Read, Some(Err(SeedError::SharedData(HostError::NotFound)))),
            },
            Step::Create { token } => {
                #[cfg(test)]
                let token = if self.unguarded { 0 } else { token };
                match written(host.set_shared_data(KEY, SENTINEL, Some(token))) {
                    Ok(()) => (Step::ReadAgain, None),
                    Err(e) => (Step::Read, Some(Err(e))),
                }
            }
            Step::ReadAgain => match read(host) {
                Found::Seed(s) => (Step::Read, Some(Ok(s))),
                Found::Other { token } => (Step::Replace { token }, None),
                Found::Absent => (Step::Read, Some(Err(SeedError::SharedData(HostError::NotFound)))),
            },
            Step::Replace { token } => {
                let mut bytes = [0u8; 32];
                if let Err(e) = host.random(&mut bytes) {
                    return Some(Err(SeedError::Random(e)));
                }
                match written(host.set_shared_data(KEY, &Seed(bytes).encode(), Some(token))) {
                    Ok(()) => (Step::ReadBack, None),
                    Err(e) => (Step::Read, Some(Err(e))),
                }
            }
            Step::ReadBack => match read(host) {
                Found::Seed(s) => (Step::Read, Some(Ok(s))),
                _ => (Step::Read, Some(Err(SeedError::Unrecognized))),
            },
        };
        self.step = next;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxytest::{ContextHost, Proxy};

    enum Run {
        Done(Result<Seed, SeedError>, Result<Seed, SeedError>, Proxy),
        /// A worker is not finished: the schedule goes on.
        Running,
        /// The schedule gives a turn to a worker that had finished.
        Invalid,
    }

    /// Run two workers' agreements on one proxy, interleaved as `schedule` says (false: A
    /// steps, true: B steps).
    fn run(schedule: &[bool], unguarded: bool) -> Run {
        let proxy = Proxy::new();
        let hosts: [ContextHost; 2] = [proxy.host(), proxy.host()];
        let mut agreements = [Agreement::new(), Agreement::new()];
        for a in &mut agreements {
            a.unguarded = unguarded;
        }
        let mut results: [Option<Result<Seed, SeedError>>; 2] = [None, None];
        for &b in schedule {
            let who = usize::from(b);
            if results[who].is_some() {
                return Run::Invalid;
            }
            results[who] = agreements[who].step(&hosts[who]);
        }
        match results {
            [Some(a), Some(b)] => Run::Done(a, b, proxy),
            _ => Run::Running,
        }
    }

    /// Every interleaving of two workers' steps, each run from scratch: (schedules, the
    /// schedules where the workers disagree or fail).
    fn every_interleaving(unguarded: bool) -> (usize, usize) {
        let (mut complete, mut bad) = (0, 0);
        let mut pending: Vec<Vec<bool>> = vec![Vec::new()];
        while let Some(schedule) = pending.pop() {
            match run(&schedule, unguarded) {
                Run::Done(a, b, proxy) => {
                    complete += 1;
                    let stored = proxy.shared_data(KEY).0.and_then(|v| Seed::decode(&v));
                    let agreed = matches!((&a, &b), (Ok(x), Ok(y)) if x == y && Some(*x) == stored);
                    bad += usize::from(!agreed);
                }
                Run::Running => {
                    assert!(schedule.len() < 16, "a worker needs more than seven steps");
                    for next in [false, true] {
                        let mut s = schedule.clone();
                        s.push(next);
                        pending.push(s);
                    }
                }
                Run::Invalid => {}
            }
        }
        (complete, bad)
    }

    #[test]
    fn two_workers_agree_whatever_the_interleaving() {
        let (complete, bad) = every_interleaving(false);
        eprintln!("guarded: {bad} of {complete} interleavings disagree");
        assert!(complete >= 100, "only {complete} interleavings explored");
        assert_eq!(bad, 0, "{bad} of {complete} interleavings disagree");
    }

    #[test]
    fn an_unguarded_creation_lets_a_late_sentinel_clobber_a_seed() {
        // The control: create the key with a plain write and some interleaving makes the
        // workers disagree (one cached a seed that a late sentinel then overwrote).
        let (complete, bad) = every_interleaving(true);
        eprintln!("unguarded: {bad} of {complete} interleavings disagree");
        assert!(bad > 0, "no disagreement in {complete} interleavings");
    }

    #[test]
    fn the_first_worker_creates_later_ones_read_it_in_one_call() {
        let proxy = Proxy::new();
        let first = agree(&proxy.host()).unwrap();
        let ((), calls) = proxy.count_host_calls(|| assert_eq!(agree(&proxy.host()).unwrap(), first));
        assert_eq!(calls.total(), 1, "{calls}");
        assert_eq!(Seed::decode(&proxy.shared_data(KEY).0.unwrap()), Some(first));
    }

    #[test]
    fn seeds_differ_across_proxies() {
        let a = agree(&Proxy::new().host()).unwrap();
        let b = agree(&Proxy::new().host()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a.word(0), a.word(1));
        assert_eq!(format!("{a:?}"), "Seed(..)");
    }

    #[test]
    fn a_foreign_value_is_replaced_and_random_failure_is_an_error() {
        let proxy = Proxy::new();
        proxy.set_shared_data(KEY, b"something else");
        let s = agree(&proxy.host()).unwrap();
        assert_eq!(Seed::decode(&proxy.shared_data(KEY).0.unwrap()), Some(s));
        let proxy = Proxy::new();
        proxy.fail_random(true);
        assert_eq!(agree(&proxy.host()), Err(SeedError::Random(HostError::Failure)));
        // Another worker with random bytes completes it later.
        proxy.fail_random(false);
        assert!(agree(&proxy.host()).is_ok());
    }
}
