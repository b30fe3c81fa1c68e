//! The outside review's attacks on the local table (issue 15, R1), replayed on the emulated
//! proxy. The attacker knows the code but not the proxy's seed: it aims its keys with the
//! table's former public hash (FNV-1a + splitmix64 of rule name and descriptor, group from the
//! high 32 bits), which is what it could compute offline. `attacker_who_knows_the_seed_*`
//! give the attacker the seed too (read from shared data) and show what the eviction rule
//! still guarantees.

use crate::filter::RateLimitRoot;
use shared::proxytest::{Proxy, Worker};
use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

type W = Worker<RateLimitRoot>;

/// A multiple of 600 s: the 10-minute buckets below refill exactly at T0.
const T0: u64 = 1_700_000_400;
const MAX_KEYS: u32 = 4096;
const GROUPS: u64 = MAX_KEYS as u64 / 4;

/// Alice may make 5 password guesses per 10 minutes.
fn config(on_full: &str) -> String {
    format!(
        r#"{{"table":{{"max_keys":{MAX_KEYS},"on_full":"{on_full}"}},"rules":[{{"name":"guess",
        "actions":[{{"request_headers":{{"header_name":"x-user","descriptor_key":"user"}}}}],
        "token_bucket":{{"max_tokens":5,"tokens_per_fill":5,"fill_interval":"600s"}}}}]}}"#
    )
}

/// The table's hash before it was keyed: public, so an attacker computes it offline.
fn public_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn public_group(user: &str) -> u64 {
    let h = public_hash(&[b"guess", b"user", user.as_bytes()]);
    ((h >> 32) * GROUPS) >> 32
}

/// `n` user names that land in `target`'s group under `predict` (an offline search).
fn colliding(n: usize, target: &str, predict: &dyn Fn(&str) -> u64) -> Vec<String> {
    let group = predict(target);
    (0u64..).map(|i| format!("mallory-{i}")).filter(|u| predict(u) == group).take(n).collect()
}

fn guess(w: &mut W, user: &str) -> u32 {
    let id = w.new_stream();
    w.set_property(id, &["source", "address"], b"10.0.0.1:1");
    match w.request_headers(id, &[(":method", "POST"), (":path", "/login"), ("x-user", user)], true) {
        shared::Action::Pause => w.local_reply(id).map_or(0, |r| r.status),
        _ => 200,
    }
}

fn proxy() -> Proxy {
    let p = Proxy::new();
    p.set_now(UNIX_EPOCH + Duration::from_secs(T0));
    p
}

/// Targeted eviction (on_full EVICT, the default): the attacker keeps alice's group full of
/// exhausted buckets and, after every 5 guesses of alice, sends one request with a new
/// colliding key. In the review that evicted alice's bucket every time (ties broke to the
/// lowest slot, hers) and her next guess started a fresh bucket: 100 guesses of 100 allowed
/// against a limit of 5 per 10 minutes.
fn targeted_eviction(p: &Proxy, predict: &dyn Fn(&str) -> u64) -> usize {
    let mut w: W = p.worker(&config("EVICT"));
    let keys = colliding(40, "alice", predict);
    let mut allowed = 0;
    allowed += usize::from(guess(&mut w, "alice") == 200);
    // Three colliding keys, each exhausted: the group's other slots hold maximal debts.
    for k in &keys[..3] {
        for _ in 0..5 {
            guess(&mut w, k);
        }
    }
    for round in 0..20 {
        let start = usize::from(round == 0);
        for _ in start..5 {
            allowed += usize::from(guess(&mut w, "alice") == 200);
        }
        guess(&mut w, &keys[3 + round]);
    }
    allowed
}

/// Targeted deny (on_full DENY): four requests with colliding keys fill alice's group before
/// her first request, which the review saw refused for minutes.
fn targeted_deny(p: &Proxy, predict: &dyn Fn(&str) -> u64) -> u32 {
    let mut w: W = p.worker(&config("DENY"));
    for k in colliding(4, "alice", predict) {
        assert_eq!(guess(&mut w, &k), 200);
    }
    guess(&mut w, "alice")
}

#[test]
fn targeted_eviction_without_the_seed_fails() {
    let p = proxy();
    let allowed = targeted_eviction(&p, &public_group);
    assert_eq!(allowed, 5, "alice got {allowed} guesses of 100 against a limit of 5 per 10 minutes");
}

#[test]
fn targeted_deny_without_the_seed_fails() {
    let p = proxy();
    assert_eq!(targeted_deny(&p, &public_group), 200, "alice's first request was refused");
}

/// The group the table really uses: what an attacker who learned the seed computes.
fn seeded_group(p: &Proxy) -> impl Fn(&str) -> u64 {
    let seed = shared::seed::agree(&p.host()).unwrap();
    let key = seed.hash_key(crate::filter::TABLE_HASH_LABEL);
    move |user: &str| {
        let limits = crate::bucket::Limits { max_tokens: 5, tokens_per_fill: 5, fill_interval_ns: 600_000_000_000 };
        let h = crate::filter::bucket_hash(
            &key,
            "guess",
            &limits,
            &[(Cow::Borrowed(&b"user"[..]), Cow::Borrowed(user.as_bytes()))],
        );
        u64::from(crate::table::place(h, 0, GROUPS as u32).0)
    }
}

#[test]
fn the_public_hash_no_longer_predicts_groups() {
    // The control for the two tests above: the attacker's keys really collide under the
    // public hash, and do not under the proxy's keyed one.
    let p = proxy();
    let _w: W = p.worker(&config("EVICT"));
    let real = seeded_group(&p);
    let keys = colliding(40, "alice", &public_group);
    let together = keys.iter().filter(|k| real(k) == real("alice")).count();
    assert!(together <= 1, "{together} of 40 aimed keys share alice's group");
}

#[test]
fn attacker_who_knows_the_seed_still_cannot_evict_into_a_fresh_budget() {
    // With the seed the keys really land in alice's group, and evictions happen; the evicted
    // debt is inherited, so alice never gets more than her 5.
    let p = proxy();
    let _ = shared::seed::agree(&p.host()).unwrap();
    let predict = seeded_group(&p);
    let allowed = targeted_eviction(&p, &predict);
    assert_eq!(allowed, 5, "alice got {allowed} guesses of 100");
}

#[test]
fn attacker_who_knows_the_seed_can_charge_a_newcomer_only_by_exhausting_its_group() {
    // What the seed still buys (documented): four colliding keys, each *exhausted*, make a key
    // new to that group inherit a full debt, so its first request is refused (as `DENY` would
    // refuse it after one request per key). One request per key only costs it one token.
    for (per_key, alice) in [(5, 429), (1, 200)] {
        let p = proxy();
        let mut w: W = p.worker(&config("EVICT"));
        let predict = seeded_group(&p);
        for k in colliding(4, "alice", &predict) {
            for _ in 0..per_key {
                guess(&mut w, &k);
            }
        }
        assert_eq!(guess(&mut w, "alice"), alice, "{per_key} requests per colliding key");
        if alice == 200 {
            let allowed = (0..10).filter(|_| guess(&mut w, "alice") == 200).count();
            assert_eq!(allowed, 3, "5 minus the inherited debt of 1, minus the first guess");
        }
    }
}
