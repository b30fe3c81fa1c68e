//! rate-limit in a real Envoy, on envoy-configs/rate-limit.yaml (rules: per_client 20 then
//! 10/s; api_key 50/min on /api/; login 3 then 1/20 s on POST /login; search_shadow 2/min in
//! shadow mode on /search). The client address is the last x-forwarded-for entry, so tests pick
//! clients by setting it.
//!
//! Buckets refill at whole multiples of `fill_interval` since the Unix epoch, on the machine's
//! clock, which the tests read too: a count is checked against the refills that actually landed
//! while it was taken ([`fill_epoch`]), never against how fast the requests were assumed to go.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{read_response, Request, Response};
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, UPSTREAM_PORT};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const CONFIG: &str = "rate-limit.yaml";

fn start_with(concurrency: u32) -> (Envoy, Upstream) {
    let envoy = Envoy::start_with(CONFIG, EnvoyOptions { concurrency, ..EnvoyOptions::default() }).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

/// How many refills of `interval` have happened since the Unix epoch (the filter's fill epoch).
fn fill_epoch(interval: Duration) -> u128 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    now.as_nanos() / interval.as_nanos()
}

/// Buckets refill at whole multiples of `fill_interval` since the Unix epoch. A test that counts
/// admissions against one interval's budget starts at least `margin` before the next fill, so
/// a refill cannot land in the middle of it (waiting, not a timing assertion).
fn away_from_fill(interval: Duration, margin: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos((now.as_nanos() % interval.as_nanos()) as u64);
    if interval - into < margin {
        std::thread::sleep(interval - into + Duration::from_millis(50));
    }
}

/// Run `count` (an exact count over one interval's budget) between two refills of `interval`:
/// start at least `margin` before the next one, and if a refill landed during the run anyway
/// (a loaded machine), run it again with fresh keys (`count` gets the attempt number) and a
/// margin of one and a half times the run's duration. Never judges a count a refill disturbed.
fn within_one_fill<T>(interval: Duration, mut margin: Duration, mut count: impl FnMut(u32) -> T) -> T {
    for attempt in 0..4 {
        away_from_fill(interval, margin);
        let (epoch, started) = (fill_epoch(interval), Instant::now());
        let out = count(attempt);
        if fill_epoch(interval) == epoch {
            return out;
        }
        let took = started.elapsed();
        eprintln!("a refill landed during attempt {attempt} ({took:?}): again with fresh keys");
        margin = margin.max(took * 3 / 2).min(interval - Duration::from_millis(100));
    }
    panic!("every attempt spanned a refill of {interval:?}")
}

/// A distinct client address per `i` (the per_client rule then never binds).
fn client(i: u32) -> String {
    let [_, b, c, d] = i.to_be_bytes();
    format!("10.{b}.{c}.{d}")
}

fn status_counts(responses: &[Response]) -> (usize, usize, Vec<u16>) {
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let limited = responses.iter().filter(|r| r.status == 429).count();
    let other = responses.iter().map(|r| r.status).filter(|s| *s != 200 && *s != 429).collect();
    (ok, limited, other)
}

/// The control for [`within_one_fill`]: a count a refill landed in is taken again.
#[test]
fn a_count_a_refill_disturbed_is_taken_again() {
    let interval = Duration::from_millis(300);
    let mut attempts = Vec::new();
    let last = within_one_fill(interval, Duration::from_millis(50), |n| {
        attempts.push(n);
        if n == 0 {
            std::thread::sleep(interval); // the first attempt spans a refill, whatever the timing
        }
        n
    });
    assert!(last >= 1 && attempts[0] == 0, "taken again: {attempts:?}");
}

/// `threads` keep-alive connections, all opened first (Envoy spreads them over its workers),
/// then released together, each sending `per_thread` requests; every response.
fn concurrent(
    port: u16,
    threads: u32,
    per_thread: u32,
    make: impl Fn(u32) -> Request + Send + Sync + 'static,
) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(threads as usize));
    let make = Arc::new(make);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, make) = (barrier.clone(), make.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                barrier.wait();
                (0..per_thread)
                    .map(|i| {
                        writer.write_all(&encode_keep_alive(&make(t * per_thread + i))).unwrap();
                        read_response(&mut reader, false).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

/// A GET on a kept-alive connection (the harness's `Request::send` closes after one).
fn encode_keep_alive(r: &Request) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nhost: localhost\r\n", r.method, r.path).into_bytes();
    for (k, v) in &r.headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Request `i` of a burst on one API key, each from its own client address.
fn api_request(key: &str) -> impl Fn(u32) -> Request + Send + Sync + 'static {
    let key = key.to_string();
    move |i| Request::get(&format!("/api/items/{i}")).header("x-api-key", &key).header("x-forwarded-for", &client(i))
}

/// The per_client rule: 20 tokens, 10 more every second.
const PER_CLIENT: (u64, u64, Duration) = (20, 10, Duration::from_secs(1));

/// 160 requests at once (8 kept-alive connections) from one client address (`x-forwarded-for`
/// as given, `{i}` replaced by the request's number): the per_client bucket admitted at most
/// its 20 tokens plus 10 per refill that landed meanwhile. Returns the responses.
fn burst_from_one_client(port: u16, path: &'static str, xff: &'static str) -> Vec<Response> {
    let (max_tokens, per_fill, interval) = PER_CLIENT;
    let epoch = fill_epoch(interval);
    let responses = concurrent(port, 8, 20, move |i| {
        Request::get(path).header("x-forwarded-for", &xff.replace("{i}", &i.to_string()))
    });
    let refills = (fill_epoch(interval) - epoch) as u64;
    let (ok, _, other) = status_counts(&responses);
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert!(
        ok as u64 <= max_tokens + per_fill * refills,
        "{ok} of 160 admitted from one client, with {refills} refills meanwhile: the bucket holds 20, plus 10 a refill"
    );
    responses
}

/// The exact-burst property: N concurrent requests on many connections, spread by Envoy over
/// its workers, admit exactly max_tokens (50), whatever the interleaving. It also shows that the
/// table groups created in `on_configure` exist before the first request: a group created on
/// the request path could lose updates and admit more.
fn exact_burst(concurrency: u32) {
    let (envoy, upstream) = start_with(concurrency);
    let port = envoy.port(LISTENER_PORT);
    let limited_stat = "wasmcustom.rate_limit.rule.api_key.limited";
    let (responses, key, limited_before) = within_one_fill(Duration::from_secs(60), Duration::from_secs(20), |n| {
        let key = format!("burst-key-{n}");
        let limited_before = envoy.stat(limited_stat);
        (concurrent(port, 24, 10, api_request(&key)), key, limited_before)
    });
    let (ok, limited, other) = status_counts(&responses);
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(ok, 50, "exactly max_tokens admitted with --concurrency {concurrency} ({limited} limited)");
    assert_eq!(limited, 240 - 50);
    let reached = upstream.requests().iter().filter(|r| r.header_value("x-api-key").as_deref() == Some(&key)).count();
    assert_eq!(reached, 50, "denied requests never reach the upstream");
    assert_eq!(envoy.wait_stat(limited_stat, limited_before + 190), limited_before + 190);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.rule.per_client.limited"), 0);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.cas_exhausted"), 0);
    // A missing group (not created at configure time) would be a host error, skipped (fail open).
    assert_eq!(envoy.stat("wasmcustom.rate_limit.host_errors"), 0);
    let workers = connections_per_worker(&envoy);
    assert_eq!(workers.len(), concurrency as usize, "{workers:?}");
    assert!(workers.iter().filter(|n| **n > 0).count() >= 2, "every connection on one worker: {workers:?}");
    // Every 429 is the api_key bucket's, with its headers.
    let r = responses.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("50"), "{r}");
    assert_eq!(r.header("x-ratelimit-remaining").as_deref(), Some("0"), "{r}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{r}");
    eprintln!(
        "--concurrency {concurrency}: 240 requests, 50 admitted; connections per worker {workers:?}; cas_conflicts = {}",
        envoy.stat("wasmcustom.rate_limit.cas_conflicts")
    );
}

fn connections_per_worker(envoy: &Envoy) -> Vec<u64> {
    envoy.connections_per_worker(LISTENER_PORT)
}

/// The same property under heavy CAS contention: the api_key bucket raised to 3000 tokens (a
/// test-only edit), 6000 requests for that one key on 32 kept-alive connections over 4 workers:
/// exactly 3000 admitted, while the workers' writes to that one group race.
#[test]
fn exact_under_cas_contention() {
    let edit = |c: String| {
        c.replacen(r#""max_tokens": 50, "tokens_per_fill": 50"#, r#""max_tokens": 3000, "tokens_per_fill": 3000"#, 1)
    };
    let envoy =
        Envoy::start_with(CONFIG, EnvoyOptions { concurrency: 4, edit: Some(Box::new(edit)), ..Default::default() })
            .unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    let responses = within_one_fill(Duration::from_secs(60), Duration::from_secs(15), |n| {
        concurrent(port, 32, 188, api_request(&format!("contention-key-{n}")))
    });
    let (ok, limited, other) = status_counts(&responses);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(ok, 3000, "{limited} limited");
    let workers = connections_per_worker(&envoy);
    assert!(workers.iter().filter(|n| **n > 0).count() >= 2, "connections on one worker only: {workers:?}");
    eprintln!(
        "contention: {} requests, {ok} admitted; connections per worker {workers:?}; cas_conflicts {}, cas_exhausted {}",
        responses.len(),
        envoy.stat("wasmcustom.rate_limit.cas_conflicts"),
        envoy.stat("wasmcustom.rate_limit.cas_exhausted")
    );
}

#[test]
fn concurrent_burst_admits_exactly_max_tokens_with_2_workers() {
    exact_burst(2);
}

#[test]
fn concurrent_burst_admits_exactly_max_tokens_with_4_workers() {
    exact_burst(4);
}

/// The same at 16 workers (oversubscribed on a small machine: correctness only, no timing).
#[test]
fn concurrent_burst_admits_exactly_max_tokens_with_16_workers() {
    exact_burst(16);
}

#[test]
fn independent_keys_stay_independent() {
    let (envoy, _upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    let send = |key: &str, i: u32| {
        Request::get("/api/x").header("x-api-key", key).header("x-forwarded-for", &client(i)).send(port).unwrap().status
    };
    let a: Vec<u16> = within_one_fill(Duration::from_secs(60), Duration::from_secs(20), |n| {
        (0..52).map(|i| send(&format!("key-a-{n}"), i)).collect()
    });
    assert_eq!(a.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(&a[50..], [429, 429]);
    // Another key is untouched by key-a's exhaustion; so is another client on a path without a key.
    assert_eq!(send("key-b", 1000), 200);
    assert_eq!(Request::get("/other").header("x-forwarded-for", &client(1)).send(port).unwrap().status, 200);
    // And the per-client bucket of one client does not affect another.
    let one = burst_from_one_client(port, "/", "192.0.2.1");
    assert!(one.iter().any(|r| r.status == 429), "one client limited");
    assert_eq!(Request::get("/").header("x-forwarded-for", "192.0.2.2").send(port).unwrap().status, 200);
}

#[test]
fn refills_after_fill_interval() {
    let (envoy, _upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    // Exhaust per_client: the whole bucket (20) is admitted, and no more than the refills that
    // landed meanwhile add (checked by the burst).
    let burst = burst_from_one_client(port, "/", "198.51.100.7");
    let (admitted, _, _) = status_counts(&burst);
    assert!(admitted >= 20, "the burst is max_tokens: {admitted}");
    let first_429 = burst.iter().find(|r| r.status == 429).expect("limited once the bucket is empty");
    assert_eq!(first_429.header("retry-after").as_deref(), Some("1"), "{first_429}");
    // Behaviour, not timing: after three fill intervals and more, tokens are back, the whole
    // bucket of them, and no more than max_tokens (uncapped, 30 would have been added).
    std::thread::sleep(Duration::from_millis(3500));
    let after = burst_from_one_client(port, "/", "198.51.100.7");
    let (ok, _, _) = status_counts(&after);
    assert!(ok >= 20, "{ok} admitted after the refill: the bucket is full again");
}

/// Two rate-limit plugins in one VM (e2e/rate-limit/two-instances.yaml): `per_ip` (429) keyed
/// on the client address, `per_user` (503) on the `x-user` header, both with a rule `limit`
/// of 3 and the same descriptor for a request whose `x-user` is its client address. Each
/// plugin keeps its own table, so each admits its own 3: with one shared table, every request
/// would take two tokens of one bucket and only the first would pass.
#[test]
fn two_instances_in_one_vm_never_share_buckets() {
    let config = e2e::repo_root().join("e2e/rate-limit/two-instances.yaml");
    let envoy = Envoy::start_path(&config, EnvoyOptions::default()).unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    let send = |ip: &str, user: &str| {
        Request::get("/").header("x-forwarded-for", ip).header("x-user", user).send(port).unwrap().status
    };
    within_one_fill(Duration::from_secs(3600), Duration::from_secs(60), |n| {
        let (ip, other_ip) = (format!("10.9.{n}.1"), format!("10.9.{n}.2"));
        let statuses: Vec<u16> = (0..4).map(|_| send(&ip, &ip)).collect();
        // Both buckets of `limit`/`remote_address`=ip hold 3 each: 3 pass, then per_ip denies.
        assert_eq!(statuses, [200, 200, 200, 429], "each plugin admits its own 3");
        // per_user's bucket for that value is spent too (by its own 3 requests, not per_ip's):
        // a fresh client address with the same user passes per_ip and meets per_user's 503.
        assert_eq!(send(&other_ip, &ip), 503, "per_user's own bucket is empty");
        // And per_ip's bucket of the fresh address took one token only: 2 more pass there with
        // fresh users.
        assert_eq!(send(&other_ip, "u1"), 200);
        assert_eq!(send(&other_ip, "u2"), 200);
        assert_eq!(send(&other_ip, "u3"), 429, "per_ip: 3 for the fresh address, the 503 included");
    });
    assert_eq!(envoy.stat("wasmcustom.rate_limit.host_errors"), 0);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.cas_exhausted"), 0);
    drop(envoy);
    if e2e::chain::skip_via_chain("the control's two plugins share one name, which a chain refuses") {
        return;
    }

    // The control: the same two plugins under one plugin name share one table, and then one
    // bucket: the first request takes 2 of its 3 tokens, the second is denied by per_user.
    let same_name = EnvoyOptions {
        edit: Some(Box::new(|c: String| {
            c.replace("                name: per_user\n", "                name: per_ip\n")
        })),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_path(&config, same_name).unwrap();
    let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    let send =
        |ip: &str| Request::get("/").header("x-forwarded-for", ip).header("x-user", ip).send(port).unwrap().status;
    within_one_fill(Duration::from_secs(3600), Duration::from_secs(60), |n| {
        let ip = format!("10.8.{n}.1");
        assert_eq!([send(&ip), send(&ip)], [200, 503], "one table under one plugin name");
    });
}

/// The table's hash before it was keyed (FNV-1a + splitmix64 of rule name and descriptor, group
/// from the high 32 bits): public, what an attacker of the old table computed offline (the same
/// model as filters/rate-limit/src/attack_tests.rs, where the attacks failed on the old code).
fn public_group(user: &str, groups: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&b"guess"[..], b"user", user.as_bytes()] {
        for b in part {
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
    h ^= h >> 31;
    ((h >> 32) * groups) >> 32
}

/// The review's R1 attacks on the table, in a real Envoy: alice may make 5 guesses per 10
/// minutes (`x-user` keyed), the table holds 4,096 keys (1,024 groups of 4), and mallory aims
/// keys at alice's group with the public hash. Targeted eviction (`EVICT`): her group kept full
/// of exhausted buckets and one new colliding key after every 5 guesses of alice gave alice
/// 100 guesses of 100; now 5. Targeted deny (`DENY`): four colliding keys made alice's first
/// request 429; now it passes. (Against the seeded hash the aimed keys scatter; an attacker who
/// learns the seed is the unit tests' and the README's matter.)
#[test]
fn aimed_keys_neither_evict_alice_into_a_fresh_budget_nor_deny_her() {
    const MAX_KEYS: u64 = 4096;
    for on_full in ["EVICT", "DENY"] {
        let opts = EnvoyOptions {
            edit: Some(Box::new(move |c: String| {
                e2e::envoy::edit_plugin_config(&c, "rate-limit", |json| {
                    *json = serde_json::json!({
                        "table": { "max_keys": MAX_KEYS, "on_full": on_full },
                        "rules": [{
                            "name": "guess",
                            "actions": [{ "request_headers": { "header_name": "x-user", "descriptor_key": "user" } }],
                            "token_bucket": { "max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "600s" }
                        }]
                    });
                })
                .unwrap()
            })),
            ..EnvoyOptions::default()
        };
        let envoy = Envoy::start_with(CONFIG, opts).unwrap();
        let _upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
        let port = envoy.port(LISTENER_PORT);
        let guess =
            |user: &str| Request::get("/login").method("POST").header("x-user", user).send(port).unwrap().status;
        within_one_fill(Duration::from_secs(600), Duration::from_secs(60), |n| {
            // A fresh victim per attempt (a refill landed in the previous one).
            let alice = if n == 0 { "alice".to_string() } else { format!("alice-{n}") };
            let target = public_group(&alice, MAX_KEYS / 4);
            let aimed: Vec<String> = (0u64..)
                .map(|i| format!("mallory-{i}"))
                .filter(|u| public_group(u, MAX_KEYS / 4) == target)
                .take(40)
                .collect();
            if on_full == "DENY" {
                for k in &aimed[..4] {
                    assert_eq!(guess(k), 200);
                }
                assert_eq!(guess(&alice), 200, "alice's first request, after 4 aimed keys (DENY)");
                return;
            }
            let mut allowed = usize::from(guess(&alice) == 200);
            for k in &aimed[..3] {
                for _ in 0..5 {
                    guess(k);
                }
            }
            for round in 0..20 {
                for _ in usize::from(round == 0)..5 {
                    allowed += usize::from(guess(&alice) == 200);
                }
                guess(&aimed[3 + round]);
            }
            assert_eq!(allowed, 5, "alice got {allowed} guesses of 100 against 5 per 10 minutes (EVICT)");
        });
        assert_eq!(envoy.stat("wasmcustom.rate_limit.host_errors"), 0);
    }
}

fn rate_limit_fields(r: &Response) -> Vec<(String, u64, u64)> {
    // `"name";r=N;t=S, ...`
    r.header("ratelimit")
        .unwrap_or_default()
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_string();
            let mut r = None;
            let mut t = None;
            for p in parts {
                if let Some(v) = p.strip_prefix("r=") {
                    r = v.parse().ok();
                }
                if let Some(v) = p.strip_prefix("t=") {
                    t = v.parse().ok();
                }
            }
            (name, r.unwrap(), t.unwrap())
        })
        .collect()
}

#[test]
fn headers_are_correct() {
    let (envoy, _upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    let r =
        Request::get("/api/a").header("x-api-key", "h").header("x-forwarded-for", "203.0.113.9").send(port).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header_all("ratelimit-policy"), ["\"per_client\";q=20;w=2, \"api_key\";q=50;w=60"], "{r}");
    let fields = rate_limit_fields(&r);
    assert_eq!(fields.iter().map(|f| (f.0.as_str(), f.1)).collect::<Vec<_>>(), [("per_client", 19), ("api_key", 49)]);
    assert!(fields[0].2 <= 2 && fields[1].2 <= 60 && fields[1].2 >= 1, "{fields:?}");
    // x-ratelimit-*: the most restrictive bucket (per_client, 19 left).
    assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("20"), "{r}");
    assert_eq!(r.header("x-ratelimit-remaining").as_deref(), Some("19"), "{r}");
    assert_eq!(r.header("x-ratelimit-reset").as_deref(), Some("1"), "{r}");
    assert!(!r.has_header("retry-after"));
    // The login rule: POST only; the 4th POST is refused with its own numbers.
    let login = |method: &str| {
        Request::get("/login").method(method).header("x-forwarded-for", "203.0.113.10").send(port).unwrap()
    };
    assert_eq!(login("GET").header("ratelimit-policy").as_deref(), Some("\"per_client\";q=20;w=2"));
    let login_limited = "wasmcustom.rate_limit.rule.login.limited";
    let (posts, limited_before): (Vec<Response>, u64) =
        within_one_fill(Duration::from_secs(20), Duration::from_secs(5), |n| {
            let limited_before = envoy.stat(login_limited);
            let client = format!("203.0.113.{}", 100 + n);
            let post = || Request::get("/login").method("POST").header("x-forwarded-for", &client).send(port).unwrap();
            ((0..4).map(|_| post()).collect(), limited_before)
        });
    assert_eq!(posts.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 200, 429]);
    let denied = &posts[3];
    assert_eq!(denied.header("content-type").as_deref(), Some("text/plain"), "{denied}");
    assert_eq!(denied.body_text(), "rate limited");
    assert_eq!(denied.header("ratelimit-policy").as_deref(), Some("\"per_client\";q=20;w=2, \"login\";q=3;w=60"));
    let fields = rate_limit_fields(denied);
    assert_eq!((fields[1].0.as_str(), fields[1].1), ("login", 0), "{denied}");
    let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{denied}");
    assert_eq!(denied.header("x-ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(envoy.wait_stat(login_limited, limited_before + 1), limited_before + 1);
}

#[test]
fn shadow_mode_never_denies() {
    let (envoy, upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    let shadow_limited = "wasmcustom.rate_limit.rule.search_shadow.shadow_limited";
    // 6 requests against the 2 of a minute: 4 over the limit, none refused.
    let (responses, before, reached_before) = within_one_fill(Duration::from_secs(60), Duration::from_secs(10), |n| {
        let (before, reached_before) = (envoy.stat(shadow_limited), upstream.requests().len());
        let client = format!("203.0.113.{}", 20 + n);
        let search = || Request::get("/search?q=x").header("x-forwarded-for", &client).send(port).unwrap();
        ((0..6).map(|_| search()).collect::<Vec<Response>>(), before, reached_before)
    });
    assert!(responses.iter().all(|r| r.status == 200), "{:?}", responses.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(upstream.requests().len(), reached_before + 6, "every request reached the upstream");
    let last = rate_limit_fields(&responses[5]);
    assert_eq!((last[1].0.as_str(), last[1].1), ("search_shadow", 0), "{}", responses[5]);
    assert_eq!(envoy.wait_stat(shadow_limited, before + 4), before + 4);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.shadow_limited"), envoy.stat(shadow_limited));
    assert_eq!(envoy.stat("wasmcustom.rate_limit.limited"), 0);
}

#[test]
fn malformed_x_forwarded_for_falls_back_to_the_peer() {
    let (envoy, _upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    // Garbage XFF: every such request is the peer 127.0.0.1, one bucket (fresh buckets would
    // admit all 160: the burst checks the count against the one bucket's).
    let responses = burst_from_one_client(port, "/", "not-an-ip-{i}");
    assert!(responses.iter().any(|r| r.status == 429), "garbage XFF must not mint fresh buckets");
    assert!(envoy.wait_stat("wasmcustom.rate_limit.xff_fallback", 160) >= 160);
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (r#""max_tokens": 50"#, r#""max_tokens": 0"#, "rules[1].token_bucket.max_tokens"),
        (r#""fill_interval": "20s""#, r#""fill_interval": "20""#, "rules[2].token_bucket.fill_interval"),
        (r#""name": "login""#, r#""name": "per_client""#, "rules[2].name"),
        (r#""max_keys": 16384"#, r#""max_keys": 16384, "size": 1"#, "table.size"),
    ];
    for (from, to, field) in cases {
        let (from, to) = (from.to_string(), to.to_string());
        assert!(std::fs::read_to_string(e2e::repo_root().join("envoy-configs").join(CONFIG)).unwrap().contains(&from));
        let opts =
            EnvoyOptions { edit: Some(Box::new(move |c: String| c.replacen(&from, &to, 1))), ..Default::default() };
        let mut envoy = Envoy::spawn(CONFIG, &opts).unwrap();
        let status = envoy.wait_exit(Duration::from_secs(60));
        assert!(status.is_some_and(|s| !s.success()), "Envoy accepted a bad config ({field}):\n{}", envoy.log());
        let log = envoy.log();
        assert!(
            log.contains(&format!("rate-limit: invalid configuration, refusing to start: field `{field}`")),
            "{field}:\n{log}"
        );
    }
}

// ---- memory ----

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// `count` keep-alive requests from `threads` threads, request `i` from client address
/// `client(first + i)`; returns (200s, 429s).
fn drive_clients(port: u16, threads: u32, first: u32, count: u32) -> (u64, u64) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let (mut ok, mut limited) = (0, 0);
                let mut i = t;
                while i < count {
                    let req =
                        format!("GET /k HTTP/1.1\r\nhost: localhost\r\nx-forwarded-for: {}\r\n\r\n", client(first + i));
                    writer.write_all(req.as_bytes()).unwrap();
                    let r = read_response(&mut reader, false).unwrap();
                    match r.status {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("status {s}: {r}"),
                    }
                    i += threads;
                }
                (ok, limited)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// 100k distinct client addresses (an attacker's key cardinality) against a 16384-key table:
/// Envoy's RSS stays within the documented bound. The table is created at configure time, so
/// the bound is already paid before the first request; 100k keys may only cost noise. A design
/// that stored a shared-data key per client would grow by ~100k × (key + value + Envoy's
/// per-entry overhead), several MB, and keep it forever (shared data has no delete).
#[test]
fn distinct_keys_keep_memory_bounded() {
    let (envoy, _upstream) = start_with(2);
    let port = envoy.port(LISTENER_PORT);
    let pid = envoy.pid().unwrap();
    // Warm-up: the same traffic shape with few keys, so connection buffers, allocator pools and
    // V8 are at their working size before the baseline.
    let warm = drive_clients(port, 8, 0, 20_000);
    assert!(warm.0 > 0);
    let before = rss_kib(pid);
    let started = Instant::now();
    let (ok, limited) = drive_clients(port, 8, 1_000_000, 100_000);
    let elapsed = started.elapsed();
    let after = rss_kib(pid);
    assert_eq!(ok + limited, 100_000);
    // Each address is new: the per_client rule admits them all.
    assert_eq!(limited, 0, "fresh clients are never limited");
    let evictions = envoy.wait_stat("wasmcustom.rate_limit.evictions", 0);
    let reused = envoy.stat("wasmcustom.rate_limit.slot_reused");
    let growth = after.saturating_sub(before);
    eprintln!(
        "100k distinct keys in {elapsed:?}: RSS {before} KiB -> {after} KiB (+{growth} KiB); \
         slot_reused {reused}, evictions {evictions}, collisions {}",
        envoy.stat("wasmcustom.rate_limit.slot_collisions")
    );
    // More keys than slots went through the table: slots were reused or evicted.
    assert!(reused + evictions >= 100_000 - 16_384, "reused {reused} + evicted {evictions}");
    // The documented bound for growth after configure: 0 bytes of shared data; 4 MiB of slack
    // for allocator and V8 noise (README "Memory bound").
    assert!(growth <= 4 * 1024, "RSS grew by {growth} KiB over 100k distinct keys");
}

/// Not a test: measures what the table costs (README "Memory bound"). Run with
/// `cargo test -p e2e --test rate_limit -- --ignored --nocapture measure_table_memory`.
#[test]
#[ignore]
fn measure_table_memory() {
    for max_keys in [4u32, 16_384, 262_144, 1_048_576] {
        let mut samples = Vec::new();
        for _ in 0..3 {
            let from = r#""max_keys": 16384"#.to_string();
            let to = format!(r#""max_keys": {max_keys}"#);
            let opts = EnvoyOptions {
                edit: Some(Box::new(move |c: String| c.replacen(&from, &to, 1))),
                concurrency: 2,
                ..Default::default()
            };
            let envoy = Envoy::start_with(CONFIG, opts).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            samples.push(rss_kib(envoy.pid().unwrap()));
        }
        samples.sort();
        eprintln!("max_keys {max_keys:>8}: Envoy RSS median {} KiB ({samples:?})", samples[1]);
    }
}
