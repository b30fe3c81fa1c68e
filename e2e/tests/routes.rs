//! Route-aware scoping in a real Envoy: a rule on the route's name (`match.route_name`, read from
//! `xds.route_name`) holds for every request Envoy routes there, however the path is spelled; a
//! prefix rule on the same paths does not. The route table matches `/admin` case-insensitively
//! (`case_sensitive: false`), so `/ADMIN/x` reaches the admin route while a `prefix: /admin`
//! rule (case-sensitive, as Envoy's own) misses it.
//!
//! Two listeners share that route table and run jwt-auth (a local provider required on the
//! admin route) then rate-limit (one token per client on the admin route): on `:10000` the
//! rules name the path prefix `/admin` (the control: the spelling trick works), on `:10001`
//! the route `admin` (it does not).

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::jwt::{self, claims_for, token, Alg, LOCAL_ISSUER};
use e2e::upstream::Upstream;
use e2e::UPSTREAM_PORT;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The listener whose rules name the path prefix, and the one whose rules name the route.
const BY_PATH: u16 = 10000;
const BY_ROUTE: u16 = 10001;
/// The rate-limit bucket refills every hour (a run that spans a refill is taken again).
const FILL: Duration = Duration::from_secs(3600);

/// `match` of every rule: a path prefix or a route name.
fn config(scope: &str) -> (String, String) {
    let keys = serde_json::to_string(&jwt::jwks(&jwt::LOCAL_KEYS)).unwrap();
    let jwt = format!(
        r#"{{"providers":{{"local":{{"issuer":"{LOCAL_ISSUER}","local_jwks":{{"inline_string":{keys}}}}}}},"rules":[{{"match":{scope},"requires":{{"provider_name":"local"}}}}]}}"#
    );
    let rate = format!(
        r#"{{"rules":[{{"name":"admin","match":{scope},"actions":[{{"request_headers":{{"header_name":"x-client","descriptor_key":"client"}}}}],"token_bucket":{{"max_tokens":1,"tokens_per_fill":1,"fill_interval":"{}s"}}}}]}}"#,
        FILL.as_secs()
    );
    (jwt, rate)
}

/// The route table of `listener`: `admin` (case-insensitive prefix), `hello` (a direct response)
/// and an unnamed catch-all.
const ROUTES: &str = r#"              - name: admin
                match: { prefix: "/admin", case_sensitive: false }
                route: { cluster: upstream }
              - name: hello
                match: { path: "/hello" }
                direct_response: { status: 200, body: { inline_string: "hello" } }
              - match: { prefix: "/" }
                route: { cluster: upstream }
"#;

fn listener(port: u16, name: &str, scope: &str) -> String {
    let (jwt, rate) = config(scope);
    listener_with(port, name, &jwt, &rate, ROUTES)
}

/// A listener running jwt-auth (`jwt`) then rate-limit (`rate`) on the route table `routes`.
fn listener_with(port: u16, name: &str, jwt: &str, rate: &str, routes: &str) -> String {
    let wasm = |filter: &str, conf: &str| {
        // The plugin JSON as a YAML single-quoted scalar.
        let conf = conf.replace('\'', "''");
        format!(
            r#"          - name: {filter}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {filter}
                root_id: {filter}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{conf}'
                vm_config:
                  vm_id: {filter}-{name}
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: {{ filename: dist/{filter}.wasm }}
"#
        )
    };
    format!(
        r#"  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{}{}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        wasm("jwt-auth", jwt),
        wasm("rate-limit", rate),
    )
}

fn start() -> (Envoy, Upstream) {
    start_listeners(&[
        listener(BY_PATH, "by_path", r#"{"prefix":"/admin"}"#),
        listener(BY_ROUTE, "by_route", r#"{"route_name":"admin"}"#),
    ])
}

fn start_listeners(listeners: &[String]) -> (Envoy, Upstream) {
    let text = format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 9901 }}
static_resources:
  listeners:
{}  clusters:
  - name: upstream
    connect_timeout: 2s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: 18080 }}
"#,
        listeners.concat(),
    );
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("e2e-routes-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, text).unwrap();
    let envoy = Envoy::start_path(&path, EnvoyOptions::default()).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

fn send(envoy: &Envoy, listener: u16, r: &Request) -> Response {
    r.send(envoy.port(listener)).unwrap()
}

fn bearer(path: &str) -> Request {
    let t = token(Alg::RS256, &claims_for(LOCAL_ISSUER, "alice"));
    Request::get(path).header("authorization", &format!("Bearer {t}"))
}

fn fill_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / FILL.as_secs()
}

#[test]
fn route_name_rules_hold_for_every_spelling_the_route_accepts_and_prefix_rules_do_not() {
    let (envoy, upstream) = start();
    let status = |listener: u16, r: &Request| send(&envoy, listener, r).status;

    // The spelling Envoy's route table and the prefix rule agree on: both listeners ask for a JWT.
    for listener in [BY_PATH, BY_ROUTE] {
        assert_eq!(status(listener, &Request::get("/admin/x")), 401, "{listener}: /admin/x");
    }
    // `/ADMIN/x` goes to the admin route (the upstream sees it) and slips past the prefix rule…
    let r = send(&envoy, BY_PATH, &Request::get("/ADMIN/x").header("x-case", "bypass"));
    assert_eq!(r.status, 200, "the control: a prefix rule misses /ADMIN/x: {r}");
    assert!(upstream.requests().iter().any(|q| q.header_value("x-case").as_deref() == Some("bypass")));
    // …not past the route rule.
    for path in ["/ADMIN/x", "/Admin", "/aDmIn/y?z=1", "/admin"] {
        let r = send(&envoy, BY_ROUTE, &Request::get(path));
        assert_eq!(r.status, 401, "{path} on the admin route: {r}");
        assert_eq!(r.body_text(), "Jwt is missing", "{path}");
    }
    // Other routes are not scoped: a routed one, and a direct response (the filters run; its
    // route has a name but not this one).
    assert_eq!(status(BY_ROUTE, &Request::get("/other")), 200);
    assert_eq!(send(&envoy, BY_ROUTE, &Request::get("/hello")).body_text(), "hello");

    // rate-limit, past jwt-auth with a valid token: one token per client on the admin route.
    for attempt in 0..3 {
        let epoch = fill_epoch();
        let by_path: Vec<u16> =
            (0..3).map(|_| status(BY_PATH, &bearer("/ADMIN/x").header("x-client", &format!("p{attempt}")))).collect();
        let by_route: Vec<u16> =
            (0..3).map(|_| status(BY_ROUTE, &bearer("/ADMIN/x").header("x-client", &format!("r{attempt}")))).collect();
        if fill_epoch() != epoch {
            continue; // a refill landed in the run: again with fresh clients
        }
        assert_eq!(by_path, [200, 200, 200], "the control: the prefix rule never limits /ADMIN/x");
        assert_eq!(by_route, [200, 429, 429], "the route rule limits /ADMIN/x");
        let limited = envoy.stat("wasmcustom.rate_limit.rule.admin.limited");
        assert!(limited >= 2, "rule.admin.limited {limited}");
        return;
    }
    panic!("every attempt spanned a refill");
}

/// The limitation the READMEs state ("Scoping to routes"): a filter reads the route Envoy picked
/// *before* the request headers were changed by a filter earlier in the chain. A wasm filter that
/// changes a request header clears Envoy's route cache and the router picks the route again, but
/// `xds.route_name` still names the first pick until the router asks. Here jwt-auth copies the
/// token's `tier` claim to `x-tier` (and removes the client's own `x-tier`), the route table
/// routes on `x-tier: gold`, and rate-limit has one token per client on the route `gold`. Every
/// upstream request carries the route that served it (`x-route`, the route's
/// `request_headers_to_add`): the router's pick, against which the rule's is seen.
#[test]
fn a_route_picked_again_after_an_earlier_filter_changed_headers_is_not_the_one_rules_see() {
    let keys = serde_json::to_string(&jwt::jwks(&jwt::LOCAL_KEYS)).unwrap();
    let jwt = format!(
        r#"{{"providers":{{"local":{{"issuer":"{LOCAL_ISSUER}","local_jwks":{{"inline_string":{keys}}},"claim_to_headers":[{{"header_name":"x-tier","claim_name":"tier"}}]}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"local"}}}}]}}"#
    );
    let rate = r#"{"rules":[{"name":"gold","match":{"route_name":"gold"},"actions":[{"request_headers":{"header_name":"x-client","descriptor_key":"client"}}],"token_bucket":{"max_tokens":1,"tokens_per_fill":1,"fill_interval":"3600s"}}]}"#;
    let routes = r#"              - name: gold
                match: { prefix: "/", headers: [ { name: x-tier, string_match: { exact: gold } } ] }
                route: { cluster: upstream }
                request_headers_to_add: [ { header: { key: x-route, value: gold } } ]
              - name: default
                match: { prefix: "/" }
                route: { cluster: upstream }
                request_headers_to_add: [ { header: { key: x-route, value: default } } ]
"#;
    let (envoy, upstream) = start_listeners(&[listener_with(BY_ROUTE, "claims", &jwt, rate, routes)]);
    // Two requests of one client with a token of `tier`, the client sending `x-tier: sent`: the
    // statuses, and the route the router served each by (`None`: not sent upstream).
    let mut n = 0;
    let mut exchange = |client: &str, tier: &str, sent: Option<&str>| -> Vec<(u16, Option<String>)> {
        let t = token(Alg::RS256, &jwt::with(claims_for(LOCAL_ISSUER, "alice"), serde_json::json!({ "tier": tier })));
        (0..2)
            .map(|_| {
                n += 1;
                let mut r = Request::get("/x")
                    .header("authorization", &format!("Bearer {t}"))
                    .header("x-client", client)
                    .header("x-n", &n.to_string());
                if let Some(sent) = sent {
                    r = r.header("x-tier", sent);
                }
                let status = send(&envoy, BY_ROUTE, &r).status;
                let served = upstream
                    .requests()
                    .into_iter()
                    .find(|q| q.header_value("x-n") == Some(n.to_string()))
                    .and_then(|q| q.header_value("x-route"));
                (status, served)
            })
            .collect()
    };
    let gold = || Some("gold".to_string());
    let default = || Some("default".to_string());

    // The control: a gold client saying so itself. The route is `gold` before jwt-auth and after
    // (it sets the same `x-tier`): the rule holds, the second request is limited.
    assert_eq!(exchange("a", "gold", Some("gold")), [(200, gold()), (429, None)]);
    // A gold token and no `x-tier`: routed `default` until jwt-auth adds `x-tier: gold`, then
    // served by `gold`, but rate-limit saw `default`: the gold rule never applies.
    assert_eq!(exchange("b", "gold", None), [(200, gold()), (200, gold())]);
    // The same with `x-tier: bronze` sent (jwt-auth replaces it).
    assert_eq!(exchange("c", "gold", Some("bronze")), [(200, gold()), (200, gold())]);
    // And the other way: a bronze token sending `x-tier: gold` is served by `default` (jwt-auth
    // replaced the header) but limited by the gold rule.
    assert_eq!(exchange("d", "bronze", Some("gold")), [(200, default()), (429, None)]);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.rule.gold.limited"), 2);
}
