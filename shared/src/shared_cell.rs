//! A value in proxy-wasm shared data (one per `vm_id`, seen by every worker), updated with
//! compare-and-swap.
//!
//! The host CAS-protects updates of an existing key, but never a key's *first* creation: two
//! workers that both find a key absent both "win" their write, and one update is lost. So:
//! create keys before traffic, from `RootFilter::configure` ([`ensure_exists`], which writes
//! the same initial bytes in every worker, harmless to repeat), and update only existing keys
//! ([`update`] refuses to create). Memory is never returned to the host (the ABI has no
//! delete), so the set of keys must be bounded by design, e.g. a fixed table of slots.

use crate::host::{Host, HostError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasError {
    /// Every attempt lost its compare-and-swap to another worker.
    Contended {
        attempts: u32,
    },
    /// The key was never created (see [`ensure_exists`]).
    Missing,
    Host(HostError),
}

impl std::fmt::Display for CasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CasError::Contended { attempts } => write!(f, "still contended after {attempts} attempts"),
            CasError::Missing => f.write_str("shared-data key does not exist"),
            CasError::Host(e) => write!(f, "host error: {e}"),
        }
    }
}

/// What [`update`] returns: the closure's result and how many CAS conflicts it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated<T> {
    pub result: T,
    pub conflicts: u32,
}

/// Create `key` with `initial` if it does not exist yet. Call before traffic (from
/// `configure`): every worker writes the same bytes, so repeating it is harmless then.
/// `initial` must not be empty: Envoy reads an empty value back as absent, so [`update`] would
/// then find no key.
pub fn ensure_exists(host: &dyn Host, key: &str, initial: &[u8]) -> Result<(), HostError> {
    if initial.is_empty() {
        return Err(HostError::BadArgument);
    }
    match host.shared_data(key) {
        (Some(_), Some(_)) => Ok(()),
        _ => host.set_shared_data(key, initial, None),
    }
}

/// Read-modify-write an existing key. `f` gets the current bytes and returns the bytes to
/// write (`None`: write nothing) and a result; it runs again after every lost CAS, at most
/// `max_attempts` times in all, so it must be a pure function of the bytes it is given.
pub fn update<T>(
    host: &dyn Host,
    key: &str,
    max_attempts: u32,
    mut f: impl FnMut(&[u8]) -> (Option<Vec<u8>>, T),
) -> Result<Updated<T>, CasError> {
    let mut conflicts = 0;
    for _ in 0..max_attempts.max(1) {
        let (value, cas) = match host.shared_data(key) {
            (Some(v), Some(cas)) if cas != 0 => (v, cas),
            _ => return Err(CasError::Missing),
        };
        let (new, result) = f(&value);
        let Some(new) = new else {
            return Ok(Updated { result, conflicts });
        };
        match host.set_shared_data(key, &new, Some(cas)) {
            Ok(()) => return Ok(Updated { result, conflicts }),
            Err(HostError::CasMismatch) => conflicts += 1,
            Err(e) => return Err(CasError::Host(e)),
        }
    }
    Err(CasError::Contended { attempts: max_attempts.max(1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;
    use std::cell::Cell;

    fn counter(bytes: &[u8]) -> u64 {
        std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    #[test]
    fn update_refuses_to_create() {
        let h = MockHost::new();
        assert_eq!(update(&h, "k", 3, |_| (Some(b"1".to_vec()), ())), Err(CasError::Missing));
        assert_eq!(h.shared_data("k"), (None, None));
    }

    #[test]
    fn empty_initial_values_are_refused() {
        let h = MockHost::new();
        assert_eq!(ensure_exists(&h, "k", b""), Err(HostError::BadArgument));
        assert_eq!(h.shared_data("k"), (None, None));
    }

    #[test]
    fn ensure_exists_keeps_an_existing_value() {
        let h = MockHost::new();
        ensure_exists(&h, "k", b"0").unwrap();
        update(&h, "k", 3, |v| (Some((counter(v) + 5).to_string().into_bytes()), ())).unwrap();
        ensure_exists(&h, "k", b"0").unwrap();
        assert_eq!(h.shared_data("k").0.unwrap(), b"5");
    }

    #[test]
    fn lost_cas_is_retried_on_top_of_the_winner() {
        let h = MockHost::new();
        ensure_exists(&h, "k", b"0").unwrap();
        let calls = Cell::new(0);
        let out = update(&h, "k", 5, |v| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                // Another worker increments between our read and our write.
                h.set_shared_data("k", b"10", None).unwrap();
            }
            let n = counter(v) + 1;
            (Some(n.to_string().into_bytes()), n)
        })
        .unwrap();
        assert_eq!(out, Updated { result: 11, conflicts: 1 });
        assert_eq!(h.shared_data("k").0.unwrap(), b"11");
    }

    #[test]
    fn contention_is_bounded_and_reported() {
        let h = MockHost::new();
        ensure_exists(&h, "k", b"0").unwrap();
        let out = update(&h, "k", 3, |v| {
            h.set_shared_data("k", b"x", None).unwrap();
            (Some(v.to_vec()), ())
        });
        assert_eq!(out, Err(CasError::Contended { attempts: 3 }));
    }

    #[test]
    fn no_write_when_the_closure_declines() {
        let h = MockHost::new();
        ensure_exists(&h, "k", b"7").unwrap();
        let cas = h.shared_data("k").1;
        let out = update(&h, "k", 3, |v| (None, counter(v))).unwrap();
        assert_eq!(out.result, 7);
        assert_eq!(h.shared_data("k").1, cas, "nothing written");
    }
}
