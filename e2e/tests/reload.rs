//! Hot reload under load: each filter's listener is served from a watched LDS file
//! (`e2e::lds`), a load generator (`e2e::load`, two threads, a new connection per request)
//! runs the whole time, and the test pushes a changed configuration, then a bad one (refused
//! by the filter's `configure`), and where the filter keeps state, first a push that keeps the
//! filter's configuration (only the route's `x-lds-version` stamp changes).
//!
//! "Failed" is what no configuration should produce: a connection error (refused, reset,
//! timeout, malformed answer) or a 5xx; denials a configuration asks for are counted apart and
//! checked against the version that served them. Each test prints its figures
//! (`reload figures: …`, run with `--nocapture`).
//!
//! What Envoy 1.40 does on such a push (`listener_manager.listener_in_place_updated`): a new
//! filter chain, a new Wasm plugin (each worker runs `on_configure` again on a new root
//! context) in the same VM when `vm_config` is unchanged, and proxy-wasm shared data (per
//! `vm_id`) untouched. So what a filter keeps in shared data survives a reload, and what it
//! keys by its configuration's fingerprint is kept exactly while that fingerprint stays.

use e2e::envoy::{edit_plugin_config, EnvoyOptions};
use e2e::http::Request;
use e2e::jwks_server::JwksServer;
use e2e::lds::{edit_plugin, wasm_config, LdsEnvoy, Push, VERSION_HEADER};
use e2e::load::{Load, Outcome};
use e2e::token_server::TokenServer;
use e2e::upstream::Upstream;
use e2e::{jwt, JWKS_PORT, LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn start(config: &str, opts: EnvoyOptions) -> (LdsEnvoy, Upstream) {
    let envoy = LdsEnvoy::start(config, opts).unwrap();
    let upstream = Upstream::start(envoy.envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

/// The listener version that served a response (`-` for answers without the route's stamp:
/// the filters' own local replies and connection errors).
fn version(o: &Outcome) -> String {
    o.header(VERSION_HEADER).unwrap_or_else(|| "-".into())
}

fn count_by<K: Ord>(outcomes: &[Outcome], key: impl Fn(&Outcome) -> K) -> BTreeMap<K, usize> {
    outcomes.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(key(o)).or_insert(0) += 1;
        m
    })
}

/// A bad configuration: one the filter's `configure` refuses (an unknown field).
fn bad(config: &mut Value) {
    config["reload_test_unknown_field"] = json!(1);
}

/// Push `listeners` with `filter`'s configuration edited; the push must be `expect`ed.
fn push(envoy: &mut LdsEnvoy, filter: &str, edit: impl FnOnce(&mut Value), expect: Push) {
    let mut next = envoy.listeners();
    assert!(edit_plugin(&mut next, filter, edit), "{filter} not in the listeners");
    assert_eq!(envoy.push(next).unwrap(), expect, "push of version {}", envoy.version());
}

/// The common checks and the figures: no failures; the first and the changed configuration
/// both served traffic; the bad one (the last push) never did, and the one before it kept
/// serving after the rejection.
fn check_and_report(filter: &str, envoy: &LdsEnvoy, outcomes: &[Outcome], good: &str, bad: &str) {
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    let by_version = count_by(outcomes, version);
    let (accepted, rejected) = envoy.lds_updates();
    eprintln!(
        "reload figures: {filter}: {} requests, {} failed, {} pushes accepted and {} rejected after the initial load; by listener version {by_version:?}",
        outcomes.len(),
        failures.len(),
        accepted - 1,
        rejected
    );
    assert!(failures.is_empty(), "{} failed requests, first: {:?}", failures.len(), failures.first());
    assert!(by_version.get("1").copied().unwrap_or(0) > 0, "{by_version:?}");
    assert!(by_version.get(good).copied().unwrap_or(0) > 0, "{by_version:?}");
    assert_eq!(by_version.get(bad), None, "the rejected version served: {by_version:?}");
    assert_eq!(rejected, 1);
    // No worker got a new VM: the VMs alive are those before the first push, and each push
    // created one VM only (Envoy's check of the new plugin's configuration on the main
    // thread), whatever the number of workers.
    let (created, active) = envoy.vms();
    let (created_before, active_before) = envoy.vms_before_first_push().unwrap();
    assert_eq!(active, active_before);
    assert_eq!(created - created_before, accepted - 1 + rejected, "VMs created by the pushes");
    // The rejected push left the previous listener serving: responses after it (the last
    // ones) are still stamped with the good version.
    let last = outcomes.iter().rev().find(|o| version(o) != "-").map(version);
    assert_eq!(last.as_deref(), Some(good));
}

#[test]
fn security_headers_changed_config_applies_under_load_and_a_bad_one_is_refused() {
    let (mut envoy, _upstream) = start("security-headers.yaml", EnvoyOptions::default());
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, |n| Request::get(&format!("/r/{n}")));
    load.wait_for(50);
    push(&mut envoy, "security-headers", |c| c["headers"] = json!({"x-frame-options": "SAMEORIGIN"}), Push::Accepted);
    load.wait_for(100);
    push(&mut envoy, "security-headers", bad, Push::Rejected);
    load.wait_for(100);
    let outcomes = load.stop();
    check_and_report("security-headers", &envoy, &outcomes, "2", "3");
    // Each version served its own configuration, and only it.
    let xfo = count_by(&outcomes, |o| (version(o), o.header("x-frame-options").unwrap_or_default()));
    assert_eq!(xfo.keys().map(|(v, x)| format!("{v} {x}")).collect::<Vec<_>>(), ["1 DENY", "2 SAMEORIGIN"], "{xfo:?}");
}

#[test]
fn body_logger_changed_config_applies_under_load_and_a_bad_one_is_refused() {
    let (mut envoy, _upstream) = start("body-logger.yaml", EnvoyOptions::default());
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, |n| {
        Request::get(&format!("/r/{n}")).method("POST").header("content-type", "application/json").body(b"{\"a\":1}")
    });
    load.wait_for(50);
    push(&mut envoy, "body-logger", |c| c["max_bytes"] = json!(1024), Push::Accepted);
    load.wait_for(100);
    push(&mut envoy, "body-logger", bad, Push::Rejected);
    load.wait_for(100);
    let outcomes = load.stop();
    check_and_report("body-logger", &envoy, &outcomes, "2", "3");
}

const API_KEY_BUDGET: usize = 40;

/// rate-limit with one rule: 40 requests per hour per `x-api-key` (no refill within the test).
fn rate_limit_options() -> EnvoyOptions {
    let rules = json!([{
        "name": "api_key",
        "actions": [{"request_headers": {"header_name": "x-api-key", "descriptor_key": "api_key"}}],
        "token_bucket": {"max_tokens": API_KEY_BUDGET, "tokens_per_fill": API_KEY_BUDGET, "fill_interval": "3600s"}
    }]);
    let edit = move |text: String| edit_plugin_config(&text, "rate-limit", |c| c["rules"] = rules.clone()).unwrap();
    EnvoyOptions { edit: Some(Box::new(edit)), ..EnvoyOptions::default() }
}

fn keyed(n: u64) -> Request {
    Request::get(&format!("/r/{n}")).header("x-api-key", "k1")
}

#[test]
fn rate_limit_buckets_survive_a_reload_that_keeps_the_rule() {
    let (mut envoy, _upstream) = start("rate-limit.yaml", rate_limit_options());
    let port = envoy.envoy.port(LISTENER_PORT);
    // Half the budget spent before any push, one request at a time.
    for n in 0..API_KEY_BUDGET as u64 / 2 {
        assert_eq!(keyed(n).send(port).unwrap().status, 200);
    }
    let load = Load::start(port, 2, |n| keyed(1000 + n));
    load.wait_for(10);
    // The same rule; the rate-limit headers turned off: a visible change of configuration.
    push(&mut envoy, "rate-limit", |c| c["enable_x_ratelimit_headers"] = json!("OFF"), Push::Accepted);
    load.wait_for(100);
    push(&mut envoy, "rate-limit", bad, Push::Rejected);
    load.wait_for(50);
    let outcomes = load.stop();
    check_and_report("rate-limit", &envoy, &outcomes, "2", "3");
    let statuses = count_by(&outcomes, |o| o.status());
    // The bucket kept across the reload: the whole run, before and after, admitted the budget
    // once. Reset at the reload, it would have admitted the 20 before plus 40 again.
    let admitted = API_KEY_BUDGET / 2 + statuses.get(&Some(200)).copied().unwrap_or(0);
    assert_eq!(admitted, API_KEY_BUDGET, "{statuses:?}");
    assert_eq!(statuses.len(), 2, "only 200 and 429: {statuses:?}");
    // Version 2's configuration served: its admitted requests carry no x-ratelimit headers.
    for o in outcomes.iter().filter(|o| version(o) == "2") {
        assert_eq!(o.header("x-ratelimit-limit"), None);
    }
    // Control: a reload under another plugin name (another table, README "A fixed table")
    // starts from a full bucket, so the count above can tell a kept bucket from a reset one.
    let mut renamed = envoy.listeners();
    wasm_config(&mut renamed, "rate-limit").unwrap()["name"] = json!("rate-limit-renamed");
    assert_eq!(envoy.push(renamed).unwrap(), Push::Accepted);
    let fresh = (0..2 * API_KEY_BUDGET as u64)
        .filter(|n| {
            let r = keyed(5000 + n).send(port).unwrap();
            r.header(VERSION_HEADER).is_none_or(|v| v == "4") && r.status == 200
        })
        .count();
    assert_eq!(fresh, API_KEY_BUDGET, "a renamed plugin has its own, full, bucket");
}

#[test]
fn jwt_auth_keeps_its_keys_across_a_reload_and_refetches_once_when_the_config_changes() {
    let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
    let mut opts = EnvoyOptions::default();
    opts.preset_ports.insert(JWKS_PORT, jwks.port);
    let (mut envoy, _upstream) = start("jwt-auth.yaml", opts);
    let fetched = |e: &LdsEnvoy| e.envoy.stat("wasmcustom.jwt_auth.jwks_fetch_success");
    assert_eq!(envoy.envoy.wait_stat("wasmcustom.jwt_auth.jwks_fetch_success", 1), 1);
    let token = jwt::token(jwt::Alg::RS256, &jwt::claims("reload"));
    // Even requests carry a valid token (always 200); odd ones none, on /public (open in the
    // shipped config, closed by the changed one).
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, move |n| {
        if n % 2 == 0 {
            Request::get(&format!("/api/{n}")).header("authorization", &format!("Bearer {token}"))
        } else {
            Request::get(&format!("/public/{n}"))
        }
    });
    load.wait_for(50);
    // The same jwt-auth configuration: the keys stay (same fingerprint, shared data kept).
    push(&mut envoy, "jwt-auth", |_| (), Push::Accepted);
    load.wait_for(100);
    assert_eq!((fetched(&envoy), jwks.calls()), (1, 1), "a reload keeping the configuration fetched the JWKS again");
    // A changed configuration: a new fingerprint, its own keys, fetched once per proxy.
    push(
        &mut envoy,
        "jwt-auth",
        |c| c["rules"][0] = json!({"match": {"prefix": "/public"}, "requires": {"provider_name": "remote"}}),
        Push::Accepted,
    );
    assert_eq!(envoy.envoy.wait_stat("wasmcustom.jwt_auth.jwks_fetch_success", 2), 2);
    load.wait_for(100);
    push(&mut envoy, "jwt-auth", bad, Push::Rejected);
    load.wait_for(50);
    let outcomes = load.stop();
    check_and_report("jwt-auth", &envoy, &outcomes, "3", "4");
    assert_eq!((fetched(&envoy), jwks.calls()), (2, 2), "one fetch for the changed configuration, not one per worker");
    // Valid tokens always passed; /public went from open to closed, never anything else.
    let with_token = count_by(&outcomes, |o| (o.n % 2 == 0, o.status()));
    assert_eq!(with_token.keys().filter(|(t, _)| *t).count(), 1, "{with_token:?}");
    assert!(with_token.contains_key(&(true, Some(200))), "{with_token:?}");
    for o in outcomes.iter().filter(|o| o.n % 2 == 1) {
        match (version(o).as_str(), o.status()) {
            ("1" | "2", Some(200)) | ("3", Some(401)) => {}
            other => panic!("unexpected answer on /public: {other:?}"),
        }
    }
    assert!(
        with_token.contains_key(&(false, Some(401))) && with_token.contains_key(&(false, Some(200))),
        "{with_token:?}"
    );
}

/// token-fetch's start-up lines carry its configuration fingerprint, one per worker and
/// configuration: how many there were and the distinct fingerprints.
fn configured(envoy: &LdsEnvoy) -> (usize, Vec<String>) {
    let log = envoy.envoy.log();
    let fingerprints: Vec<String> = log
        .lines()
        .filter_map(|l| l.split_once("configuration fingerprint ").map(|(_, f)| f.trim().to_string()))
        .collect();
    let mut distinct = fingerprints.clone();
    distinct.sort();
    distinct.dedup();
    (fingerprints.len(), distinct)
}

#[test]
fn token_fetch_keeps_its_token_across_a_reload_and_fetches_once_when_the_config_changes() {
    let tokens = TokenServer::start(0, 3600).unwrap();
    let mut opts = EnvoyOptions::default();
    opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
    let (mut envoy, upstream) = start("token-fetch.yaml", opts);
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, |n| Request::get(&format!("/r/{n}")));
    load.wait_for(50);
    let (lines_before, fingerprints) = configured(&envoy);
    assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
    // The same token-fetch configuration: every worker configures a new plugin (more start-up
    // lines, the same fingerprint) and finds the token in shared data.
    push(&mut envoy, "token-fetch", |_| (), Push::Accepted);
    load.wait_for(100);
    let (lines_after, same) = configured(&envoy);
    assert!(lines_after > lines_before, "the reload configured no new plugin");
    assert_eq!(same, fingerprints);
    assert_eq!(tokens.issued(), 1, "a reload keeping the configuration fetched a token again");
    // A changed configuration (another scope): a new fingerprint, one fetch per proxy.
    push(&mut envoy, "token-fetch", |c| c["oauth2"]["scopes"] = json!(["orders.read", "orders.write"]), Push::Accepted);
    load.wait_for(100);
    push(&mut envoy, "token-fetch", bad, Push::Rejected);
    load.wait_for(50);
    let outcomes = load.stop();
    check_and_report("token-fetch", &envoy, &outcomes, "3", "4");
    assert_eq!(configured(&envoy).1.len(), 2);
    assert_eq!(tokens.issued(), 2, "one fetch for the changed configuration, not one per worker");
    // Every request reached the upstream with an issued token; both tokens were used.
    let seen = upstream.requests();
    let auth =
        count_by_text(seen.iter().filter(|r| r.path.starts_with("/r/")).map(|r| r.header_value("authorization")));
    assert_eq!(
        auth.keys().cloned().collect::<Vec<_>>(),
        [Some("Bearer tok-1".to_string()), Some("Bearer tok-2".to_string())],
        "{auth:?}"
    );
}

fn count_by_text(values: impl Iterator<Item = Option<String>>) -> BTreeMap<Option<String>, usize> {
    values.fold(BTreeMap::new(), |mut m, v| {
        *m.entry(v).or_insert(0) += 1;
        m
    })
}

/// The control for every "0 failed" above: the load generator does count a 5xx and a
/// connection error as failures (a route answering 503, then the listener removed).
#[test]
fn the_load_generator_counts_5xx_and_connection_errors_as_failures() {
    let (mut envoy, _upstream) = start("security-headers.yaml", EnvoyOptions::default());
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, |n| Request::get(&format!("/r/{n}")));
    load.wait_for(20);
    let mut failing = envoy.listeners();
    for l in &mut failing {
        for chain in l["filter_chains"].as_array_mut().unwrap() {
            for f in chain["filters"].as_array_mut().unwrap() {
                for host in f["typed_config"]["route_config"]["virtual_hosts"].as_array_mut().unwrap() {
                    host["routes"] = json!([{"match": {"prefix": "/"}, "direct_response": {"status": 503}}]);
                }
            }
        }
    }
    assert_eq!(envoy.push(failing).unwrap(), Push::Accepted);
    load.wait_for(50);
    assert_eq!(envoy.push(Vec::new()).unwrap(), Push::Accepted);
    load.wait_for(50);
    let outcomes = load.stop();
    let kinds = count_by(&outcomes, |o| match &o.result {
        Ok(r) => format!("{} {}", version(o), r.status),
        Err(_) => "connection error".to_string(),
    });
    eprintln!("control: {kinds:?}");
    assert!(
        kinds.contains_key("1 200") && kinds.contains_key("2 503") && kinds.contains_key("connection error"),
        "{kinds:?}"
    );
    let failed = outcomes.iter().filter(|o| o.failed()).count();
    assert_eq!(failed, outcomes.len() - kinds["1 200"], "{kinds:?}");
}

/// A reload that changes a rule's rate in place (same rule name and index): the key's bucket,
/// one token spent, starts full under the new shape, as a renamed rule's does.
///
/// Regression: a bucket's state is a point on its rule's virtual token clock
/// (`filters/rate-limit/src/bucket.rs`) and was read under the new rule's clock. A slower
/// rule's clock is far behind the stored state, so every bucket the old rule had touched read
/// as in debt far beyond `max_tokens` and the key was denied for about as long as the Unix
/// epoch is old (0 of 39 admitted). The shape is now part of each key's hash.
#[test]
fn a_reload_that_slows_a_rule_keeps_its_buckets_usable() {
    let (mut envoy, _upstream) = start("rate-limit.yaml", rate_limit_options());
    let port = envoy.envoy.port(LISTENER_PORT);
    assert_eq!(keyed(0).send(port).unwrap().status, 200);
    // The same budget, refilled once a day instead of once an hour.
    let slower = json!({"max_tokens": API_KEY_BUDGET, "tokens_per_fill": API_KEY_BUDGET, "fill_interval": "86400s"});
    push(&mut envoy, "rate-limit", |c| c["rules"][0]["token_bucket"] = slower, Push::Accepted);
    let stamped = |r: &e2e::http::Response| r.header(VERSION_HEADER).is_none_or(|v| v == "2");
    let admitted = (1..=2 * API_KEY_BUDGET as u64)
        .filter(|n| {
            let r = keyed(*n).send(port).unwrap();
            stamped(&r) && r.status == 200
        })
        .count();
    // Control: a key the old rule never saw gets the whole budget under the new one.
    let fresh = (0..2 * API_KEY_BUDGET as u64)
        .filter(|n| Request::get(&format!("/f/{n}")).header("x-api-key", "k2").send(port).unwrap().status == 200)
        .count();
    assert_eq!(fresh, API_KEY_BUDGET);
    assert_eq!(admitted, API_KEY_BUDGET, "admitted after the reload, the bucket of the new shape full");
}

/// The way around the issue above, as the README gives it: a rule whose rate changes gets a new
/// name, and its buckets start full under the new rate (the name is part of each key's hash).
#[test]
fn a_reload_that_renames_a_slowed_rule_starts_its_buckets_full() {
    let (mut envoy, _upstream) = start("rate-limit.yaml", rate_limit_options());
    let port = envoy.envoy.port(LISTENER_PORT);
    let admitted = |from: u64| {
        (from..from + 2 * API_KEY_BUDGET as u64).filter(|n| keyed(*n).send(port).unwrap().status == 200).count()
    };
    assert_eq!(admitted(0), API_KEY_BUDGET);
    let slower = json!({"max_tokens": API_KEY_BUDGET, "tokens_per_fill": API_KEY_BUDGET, "fill_interval": "86400s"});
    push(
        &mut envoy,
        "rate-limit",
        |c| {
            c["rules"][0]["name"] = json!("api_key_daily");
            c["rules"][0]["token_bucket"] = slower;
        },
        Push::Accepted,
    );
    // Control for the 40 below: under the old rule the key had nothing left (the 80 above).
    assert_eq!(admitted(1000), API_KEY_BUDGET);
}

/// A push that changes `vm_config` (here its `configuration`, part of Envoy's VM key; a new
/// module version does the same) gets new VMs on every worker, and proxy-wasm shared data,
/// which belongs to the `vm_id`, survives them: token-fetch's token is not fetched again.
#[test]
fn new_vms_for_the_same_vm_id_keep_shared_data() {
    let tokens = TokenServer::start(0, 3600).unwrap();
    let concurrency = 2;
    let mut opts = EnvoyOptions { concurrency, ..EnvoyOptions::default() };
    opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
    let (mut envoy, upstream) = start("token-fetch.yaml", opts);
    let load = Load::start(envoy.envoy.port(LISTENER_PORT), 2, |n| Request::get(&format!("/r/{n}")));
    load.wait_for(50);
    let (created_before, _) = envoy.vms();
    let mut next = envoy.listeners();
    wasm_config(&mut next, "token-fetch").unwrap()["vm_config"]["configuration"] =
        json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "reload-test"});
    assert_eq!(envoy.push(next).unwrap(), Push::Accepted);
    load.wait_for(150);
    let outcomes = load.stop();
    let failures = outcomes.iter().filter(|o| o.failed()).count();
    let (created, _) = envoy.vms();
    eprintln!(
        "reload figures: token-fetch, new VMs: {} requests, {failures} failed, {} VMs created by the push",
        outcomes.len(),
        created - created_before
    );
    assert_eq!(failures, 0);
    assert!(
        created - created_before > u64::from(concurrency),
        "every worker got a new VM: {created_before} → {created}"
    );
    assert!(count_by(&outcomes, version).contains_key("2"));
    assert_eq!(tokens.issued(), 1, "new VMs fetched a token again");
    assert!(upstream.requests().iter().all(|r| r.header_value("authorization").as_deref() == Some("Bearer tok-1")));
}
