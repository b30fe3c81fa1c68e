//! security-headers proved in a real browser: headless Chromium (Debian's) loads pages that the
//! e2e upstream serves through a real Envoy running the shipped `security-headers.yaml`, and
//! each test observes what the browser did (which scripts ran, which frames and images loaded,
//! what `window.opener` is, whether it upgraded a navigation), never a header string.
//!
//! Every test runs the same pages twice: through the shipped config, and through the same
//! config with the security-headers filter removed (the control). The control must misbehave,
//! so no test passes because the browser would have done the same anyway. (One exception,
//! `hsts_is_not_recorded_over_plain_http`, says why and has its contrast in the same browser.)
//!
//! Origins: `site` is Envoy's listener (`http://127.0.0.1:<port>`); `other` is the upstream
//! itself on its own port, a second origin whose responses never pass the filter (the
//! third-party script host, the cross-origin framer and opener). HSTS uses the TLS listener as
//! `https://localhost:<port>`, the demo CA trusted in the browser's own NSS database.

use e2e::browser::{Browser, BrowserOptions, Tab, WAIT};
use e2e::envoy::{edit_plugin_config, without_http_filter, Envoy, EnvoyOptions};
use e2e::upstream::{Page, Upstream, UpstreamOptions};
use e2e::{repo_root, LISTENER_PORT, TLS_LISTENER_PORT, UPSTREAM_PORT};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = "security-headers.yaml";
const FILTER: &str = "security-headers";

/// The CSP the report-only overlay observes: the shipped default with a `report-uri` (which
/// Chromium sends as each violation happens), without `frame-ancestors` (ignored in a
/// report-only policy; `x-frame-options: DENY` still applies).
const REPORT_ONLY_CSP: &str = "default-src 'none'; report-uri /csp-reports";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    /// `envoy-configs/security-headers.yaml` as shipped.
    Shipped,
    /// The shipped config with the test overlay documented in the filter's README: the default
    /// CSP sent as `Content-Security-Policy-Report-Only`, reporting to `/csp-reports`.
    ReportOnly,
    /// The control: the shipped config with the security-headers filter removed.
    WithoutFilter,
}

/// One Envoy (as `setup` says) and the upstream serving the test pages behind it.
struct Site {
    envoy: Envoy,
    upstream: Upstream,
}

impl Site {
    fn start(setup: Setup) -> Site {
        let edit: Option<Box<dyn Fn(String) -> String>> = match setup {
            Setup::Shipped => None,
            Setup::ReportOnly => Some(Box::new(|config: String| {
                edit_plugin_config(&config, FILTER, |json| {
                    json["content_security_policy_report_only"] = json!(true);
                    json["headers"]["content-security-policy"] = json!(REPORT_ONLY_CSP);
                })
                .expect("the shipped config has the filter's JSON configuration")
            })),
            Setup::WithoutFilter => Some(Box::new(|config: String| {
                without_http_filter(&config, FILTER).expect("the shipped config has the filter")
            })),
        };
        let envoy = Envoy::start_with(CONFIG, EnvoyOptions { edit, ..EnvoyOptions::default() }).unwrap();
        let site = format!("http://127.0.0.1:{}", envoy.port(LISTENER_PORT));
        let other = format!("http://127.0.0.1:{}", envoy.port(UPSTREAM_PORT));
        let pages = Arc::new(pages(&site, &other));
        let upstream =
            Upstream::start_with(envoy.port(UPSTREAM_PORT), UpstreamOptions { pages, ..UpstreamOptions::default() })
                .unwrap();
        Site { envoy, upstream }
    }

    /// Through Envoy.
    fn site(&self) -> String {
        format!("http://127.0.0.1:{}", self.envoy.port(LISTENER_PORT))
    }

    /// The second origin: the upstream directly, no Envoy, no filter.
    fn other(&self) -> String {
        format!("http://127.0.0.1:{}", self.upstream.port)
    }

    /// Whether the upstream was asked for `path` (query ignored).
    fn requested(&self, path: &str) -> bool {
        self.upstream.requests().iter().any(|r| r.path.split('?').next() == Some(path))
    }

    /// The CSP reports (`application/csp-report` bodies) the browser sent so far.
    fn csp_reports(&self) -> Vec<Value> {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/csp-reports")
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|v| v.get("csp-report").cloned())
            .collect()
    }
}

const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];
const PIXEL_DATA_URL: &str = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==";

/// Every page the tests load, by path; `{site}` and `{other}` stand for the two origins. The
/// upstream serves the same set on both (a test picks the origin by the URL it loads).
fn pages(site: &str, other: &str) -> BTreeMap<String, Page> {
    let html =
        |body: &str| Page::new("text/html; charset=utf-8", body.replace("{site}", site).replace("{other}", other));
    let js = |body: &str| Page::new("text/javascript", body.replace("{site}", site).replace("{other}", other));
    let css = |body: &str| Page::new("text/css", body);
    let gif = || Page::new("image/gif", PIXEL_GIF);
    BTreeMap::from([
        // The default CSP: an inline and a third-party script.
        (
            "/app/scripts.html".into(),
            html(
                "<!doctype html><title>scripts</title>\
                 <script>window.inlineRan = true;</script>\
                 <script src=\"{other}/third-party.js\"></script>",
            ),
        ),
        ("/third-party.js".into(), js("window.thirdPartyRan = true;")),
        // A page with nothing in it: framed, opened as a popup, the HSTS site.
        ("/app/page.html".into(), html("<!doctype html><title>page</title><p>page</p>")),
        ("/embed/x".into(), html("<!doctype html><title>embed</title><p>embed</p>")),
        // Framers: one on the second origin, one on the site (under /docs, whose CSP allows
        // same-origin frames; the default CSP allows no frames at all).
        (
            "/framer.html".into(),
            html(
                "<!doctype html><title>framer</title>\
                 <iframe name=\"default\" src=\"{site}/app/page.html\"></iframe>\
                 <iframe name=\"embed\" src=\"{site}/embed/x\"></iframe>",
            ),
        ),
        (
            "/docs/framer.html".into(),
            html(
                "<!doctype html><title>framer</title>\
                 <iframe name=\"default\" src=\"/app/page.html\"></iframe>\
                 <iframe name=\"embed\" src=\"/embed/x\"></iframe>",
            ),
        ),
        // /docs: one of each kind of resource its CSP allows, and one of each it does not.
        (
            "/docs/page.html".into(),
            html(
                "<!doctype html><html><head><title>docs</title>\
                 <style>#inline-style { color: rgb(1, 2, 3); }</style>\
                 <link rel=\"stylesheet\" href=\"/docs/site.css\">\
                 <link rel=\"stylesheet\" href=\"{other}/third.css\">\
                 </head><body>\
                 <p id=\"inline-style\">a</p><p id=\"self-style\">b</p><p id=\"third-style\">c</p>\
                 <p id=\"attr-style\" style=\"color: rgb(10, 11, 12)\">d</p>\
                 <img id=\"self-img\" src=\"/docs/pixel.gif\">\
                 <img id=\"data-img\" src=\"PIXEL_DATA_URL\">\
                 <img id=\"third-img\" src=\"{other}/pixel.gif\">\
                 <script>window.inlineRan = true;</script>\
                 <script src=\"/docs/app.js\"></script>\
                 <script src=\"{other}/third-party.js\"></script>\
                 </body></html>"
                    .replace("PIXEL_DATA_URL", PIXEL_DATA_URL)
                    .as_str(),
            ),
        ),
        ("/docs/site.css".into(), css("#self-style { color: rgb(4, 5, 6); }")),
        ("/third.css".into(), css("#third-style { color: rgb(7, 8, 9); }")),
        ("/docs/pixel.gif".into(), gif()),
        ("/pixel.gif".into(), gif()),
        (
            "/docs/app.js".into(),
            js("window.selfScriptRan = true;\n\
                try { eval('window.evalRan = true'); } catch (e) {}\n\
                const ok = url => fetch(url, { mode: 'no-cors' }).then(() => true, () => false);\n\
                window.fetches = Promise.all([ok('/docs/data.json'), ok('{other}/data.json')])\n\
                  .then(([self, third]) => ({ self, third }));"),
        ),
        ("/docs/data.json".into(), Page::new("application/json", "{}")),
        ("/data.json".into(), Page::new("application/json", "{}")),
        // COOP: the cross-origin opener. CORP: a cross-origin page loading the site's image.
        ("/opener.html".into(), html("<!doctype html><title>opener</title>")),
        ("/app/pixel.gif".into(), gif()),
        ("/corp.html".into(), html("<!doctype html><title>corp</title><img id=\"img\" src=\"{site}/app/pixel.gif\">")),
    ])
}

/// The site as `setup` says and its control (the filter removed). One after the other, from
/// the test's own thread: an Envoy spawned from a thread that then ends gets SIGTERM.
fn site_and_control(setup: Setup) -> (Site, Site) {
    (Site::start(setup), Site::start(Setup::WithoutFilter))
}

fn launch() -> (Browser, Tab) {
    let mut browser = Browser::launch().unwrap();
    let tab = browser.new_tab().unwrap();
    (browser, tab)
}

/// Wait (bounded) until `done` holds; whether it did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Which of the two scripts of `/app/scripts.html` ran, and whether the third-party one was
/// even fetched.
fn scripts_outcome(site: &Site, browser: &mut Browser, tab: &Tab) -> Value {
    browser.navigate(tab, &format!("{}/app/scripts.html", site.site())).unwrap();
    json!({
        "inline_ran": browser.eval(tab, "window.inlineRan === true").unwrap(),
        "third_party_ran": browser.eval(tab, "window.thirdPartyRan === true").unwrap(),
        "third_party_fetched": site.requested("/third-party.js"),
    })
}

#[test]
fn default_csp_blocks_inline_and_third_party_scripts() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    assert_eq!(
        scripts_outcome(&shipped, &mut browser, &tab),
        json!({"inline_ran": false, "third_party_ran": false, "third_party_fetched": false}),
        "through the shipped config"
    );
    assert_eq!(
        scripts_outcome(&control, &mut browser, &tab),
        json!({"inline_ran": true, "third_party_ran": true, "third_party_fetched": true}),
        "without the filter"
    );
}

#[test]
fn report_only_csp_reports_the_violations_and_runs_the_scripts() {
    let (mut browser, tab) = launch();
    let (report_only, control) = site_and_control(Setup::ReportOnly);
    assert_eq!(
        scripts_outcome(&report_only, &mut browser, &tab),
        json!({"inline_ran": true, "third_party_ran": true, "third_party_fetched": true}),
        "report-only runs what the policy would block"
    );
    // One report for each script, sent by the browser through Envoy, as reports (not blocks).
    let other = report_only.other();
    let both_reported = eventually(|| {
        let reports = report_only.csp_reports();
        let blocked = |uri: &str| reports.iter().any(|r| r["blocked-uri"].as_str().is_some_and(|b| b.starts_with(uri)));
        blocked("inline") && blocked(&other)
    });
    let reports = report_only.csp_reports();
    assert!(both_reported, "reports for the inline and the third-party script: {reports:#?}");
    for r in &reports {
        assert_eq!(r["disposition"], "report", "{r:#}");
        assert_eq!(r["original-policy"], REPORT_ONLY_CSP, "{r:#}");
        assert!(r["document-uri"].as_str().is_some_and(|d| d.ends_with("/app/scripts.html")), "{r:#}");
    }

    // Control: without the filter nothing is reported. The page has run (its scripts did)
    // before we look; reports leave the browser as the violations happen.
    assert_eq!(
        scripts_outcome(&control, &mut browser, &tab),
        json!({"inline_ran": true, "third_party_ran": true, "third_party_fetched": true})
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(control.csp_reports(), Vec::<Value>::new(), "no policy, no report");
}

/// For each `<iframe name>` of the page at `url`: whether the browser rendered the framed
/// document (a refused frame holds Chromium's error page, `chrome-error://…`).
fn frames_outcome(browser: &mut Browser, tab: &Tab, url: &str) -> Value {
    browser.navigate(tab, url).unwrap();
    let tree = browser.call(Some(&tab.session), "Page.getFrameTree", json!({})).unwrap();
    let children = tree.pointer("/frameTree/childFrames").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for child in children {
        let frame = &child["frame"];
        let name = frame["name"].as_str().unwrap_or_default().to_string();
        let url = frame["url"].as_str().unwrap_or_default();
        out.insert(name, json!(url.starts_with("http")));
    }
    Value::Object(out)
}

#[test]
fn a_cross_origin_page_frames_neither_a_default_path_nor_embed() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    let framer = format!("{}/framer.html", shipped.other());
    assert_eq!(frames_outcome(&mut browser, &tab, &framer), json!({"default": false, "embed": false}));
    // The browser did ask: the responses were refused, not the requests.
    assert!(shipped.requested("/app/page.html") && shipped.requested("/embed/x"));

    let framer = format!("{}/framer.html", control.other());
    assert_eq!(frames_outcome(&mut browser, &tab, &framer), json!({"default": true, "embed": true}));
}

#[test]
fn a_same_origin_page_frames_embed_but_not_a_default_path() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    let framer = format!("{}/docs/framer.html", shipped.site());
    assert_eq!(frames_outcome(&mut browser, &tab, &framer), json!({"default": false, "embed": true}));

    let framer = format!("{}/docs/framer.html", control.site());
    assert_eq!(frames_outcome(&mut browser, &tab, &framer), json!({"default": true, "embed": true}));
}

/// What ran and loaded on `/docs/page.html`.
fn docs_outcome(site: &Site, browser: &mut Browser, tab: &Tab) -> Value {
    browser.navigate(tab, &format!("{}/docs/page.html", site.site())).unwrap();
    browser
        .eval(
            tab,
            "(async () => {
               const color = id => getComputedStyle(document.getElementById(id)).color;
               const loaded = id => document.getElementById(id).naturalWidth > 0;
               const fetched = await (window.fetches || Promise.resolve({}));
               return {
                 inline_script: window.inlineRan === true,
                 same_origin_script: window.selfScriptRan === true,
                 third_party_script: window.thirdPartyRan === true,
                 eval: window.evalRan === true,
                 inline_style: color('inline-style') === 'rgb(1, 2, 3)',
                 style_attribute: color('attr-style') === 'rgb(10, 11, 12)',
                 same_origin_stylesheet: color('self-style') === 'rgb(4, 5, 6)',
                 third_party_stylesheet: color('third-style') === 'rgb(7, 8, 9)',
                 same_origin_image: loaded('self-img'),
                 data_image: loaded('data-img'),
                 third_party_image: loaded('third-img'),
                 same_origin_fetch: fetched.self === true,
                 third_party_fetch: fetched.third === true,
               };
             })()",
        )
        .unwrap()
}

#[test]
fn docs_override_runs_exactly_what_its_csp_allows() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    // default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'
    assert_eq!(
        docs_outcome(&shipped, &mut browser, &tab),
        json!({
            "inline_script": false,
            "same_origin_script": true,
            "third_party_script": false,
            "eval": false,
            "inline_style": true,
            "style_attribute": true,
            "same_origin_stylesheet": true,
            "third_party_stylesheet": false,
            "same_origin_image": true,
            "data_image": true,
            "third_party_image": false,
            "same_origin_fetch": true,
            "third_party_fetch": false,
        })
    );
    for blocked in ["/third-party.js", "/third.css", "/pixel.gif", "/data.json"] {
        assert!(!shipped.requested(blocked), "{blocked} was blocked before it was requested");
    }

    let outcome = docs_outcome(&control, &mut browser, &tab);
    let everything: serde_json::Map<String, Value> =
        outcome.as_object().unwrap().keys().map(|k| (k.clone(), json!(true))).collect();
    assert_eq!(outcome, Value::Object(everything), "without the filter everything runs and loads");
}

/// A page on the second origin opens `/app/page.html` of the site: whether the popup sees its
/// opener, and whether the opener's handle on the popup was closed.
fn opener_outcome(site: &Site, browser: &mut Browser, tab: &Tab) -> Value {
    browser.navigate(tab, &format!("{}/opener.html", site.other())).unwrap();
    let popup_url = format!("{}/app/page.html", site.site());
    browser.eval(tab, &format!("window.popup = window.open('{popup_url}', 'popup'); true")).unwrap();
    let mut popup_target = None;
    let found = eventually(|| {
        let targets = browser.call(None, "Target.getTargets", json!({})).unwrap();
        popup_target = targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page" && t["url"] == popup_url.as_str())
            .and_then(|t| t["targetId"].as_str().map(str::to_string));
        popup_target.is_some()
    });
    assert!(found, "no popup at {popup_url}");
    let popup = browser.attach(&popup_target.unwrap()).unwrap();
    assert!(browser.wait_true(&popup, "document.readyState === 'complete'").unwrap());
    json!({
        "popup_sees_opener": browser.eval(&popup, "window.opener !== null").unwrap(),
        "opener_handle_closed": browser.eval(tab, "window.popup.closed").unwrap(),
    })
}

#[test]
fn coop_gives_a_cross_origin_popup_no_opener() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    assert_eq!(
        opener_outcome(&shipped, &mut browser, &tab),
        json!({"popup_sees_opener": false, "opener_handle_closed": true})
    );
    assert_eq!(
        opener_outcome(&control, &mut browser, &tab),
        json!({"popup_sees_opener": true, "opener_handle_closed": false})
    );
}

/// A page on the second origin loads the site's image (`<img>`, a no-cors request): whether it
/// loaded, and why the browser refused it if it did.
fn corp_outcome(site: &Site, browser: &mut Browser, tab: &Tab) -> Value {
    browser.take_events(&tab.session, "Network.loadingFailed");
    browser.navigate(tab, &format!("{}/corp.html", site.other())).unwrap();
    let blocked: Vec<Value> = browser
        .take_events(&tab.session, "Network.loadingFailed")
        .into_iter()
        .filter_map(|e| e.get("blockedReason").cloned())
        .collect();
    json!({
        "loaded": browser.eval(tab, "document.getElementById('img').naturalWidth > 0").unwrap(),
        "blocked_reasons": blocked,
        "requested": site.requested("/app/pixel.gif"),
    })
}

#[test]
fn corp_blocks_a_cross_origin_no_cors_load() {
    let (mut browser, tab) = launch();
    let (shipped, control) = site_and_control(Setup::Shipped);
    assert_eq!(
        corp_outcome(&shipped, &mut browser, &tab),
        json!({"loaded": false, "blocked_reasons": ["corp-not-same-origin"], "requested": true})
    );
    assert_eq!(
        corp_outcome(&control, &mut browser, &tab),
        json!({"loaded": true, "blocked_reasons": [], "requested": true})
    );
}

/// A fresh browser that trusts the demo CA (in its own NSS database).
///
/// The demo certificate names `localhost` and `127.0.0.1`. Chromium never takes HSTS from an IP
/// address, and by default (feature `IgnoreHSTSForLocalhost`, crbug.com/41251622) no longer
/// from `localhost` either, so that one local HTTPS server cannot pin HTTPS on every local
/// port. Turning that feature off restores the standard (RFC 6797) processing for `localhost`
/// and changes nothing else; certificate checking stays on.
fn hsts_browser() -> (Browser, Tab) {
    let ca = repo_root().join("envoy-configs/certs/demo-ca.crt");
    let mut browser = Browser::launch_with(BrowserOptions {
        trust_ca: Some(ca),
        extra_flags: vec!["--disable-features=IgnoreHSTSForLocalhost".into()],
    })
    .unwrap();
    let tab = browser.new_tab().unwrap();
    (browser, tab)
}

/// The browser visits `first`, then navigates to `http://localhost:<TLS port>/app/page.html`:
/// whether it turned that into HTTPS itself (an internal redirect, reason HSTS) and where it
/// ended.
fn hsts_outcome(browser: &mut Browser, tab: &Tab, site: &Site, first: &str) -> Value {
    browser.navigate(tab, first).unwrap();
    browser.take_events(&tab.session, "Network.requestWillBeSent");

    let tls_port = site.envoy.port(TLS_LISTENER_PORT);
    let later = format!("http://localhost:{tls_port}/app/page.html");
    let navigation = browser.navigate(tab, &later);
    let internal_redirects: Vec<Value> = browser
        .take_events(&tab.session, "Network.requestWillBeSent")
        .into_iter()
        .filter_map(|e| e.get("redirectResponse").cloned())
        .filter(|r| r["statusText"] == "Internal Redirect")
        .map(|r| {
            let header = |name: &str| r["headers"][name].clone();
            json!({"status": r["status"], "reason": header("Non-Authoritative-Reason"), "location": header("Location")})
        })
        .collect();
    let landed = match navigation {
        Ok(()) => browser.eval(tab, "location.href").unwrap(),
        Err(e) => json!(e),
    };
    json!({"internal_redirects": internal_redirects, "landed": landed})
}

fn upgraded_to(secure: &str) -> Value {
    json!({"internal_redirects": [{"status": 307, "reason": "HSTS", "location": secure}], "landed": secure})
}

fn secure_url(site: &Site) -> String {
    format!("https://localhost:{}/app/page.html", site.envoy.port(TLS_LISTENER_PORT))
}

#[test]
fn hsts_over_tls_makes_the_browser_upgrade_a_later_http_navigation() {
    let (shipped, control) = site_and_control(Setup::Shipped);
    let (mut browser, tab) = hsts_browser();
    let secure = secure_url(&shipped);
    assert_eq!(hsts_outcome(&mut browser, &tab, &shipped, &secure), upgraded_to(&secure));

    // A fresh browser (HSTS is per host name, not port), the same steps without the filter.
    let (mut browser, tab) = hsts_browser();
    let outcome = hsts_outcome(&mut browser, &tab, &control, &secure_url(&control));
    assert_eq!(outcome["internal_redirects"], json!([]), "{outcome:#}");
    // Plain HTTP to the TLS listener: the navigation fails.
    assert!(outcome["landed"].as_str().is_some_and(|l| l.contains("net::ERR_")), "{outcome:#}");
}

/// No control without the filter here: nothing makes a browser record HSTS from plain HTTP
/// (RFC 6797 §8.1), filter or not. The contrast is in the same browser: after the plain-HTTP
/// visit changed nothing, one HTTPS visit does.
#[test]
fn hsts_is_not_recorded_over_plain_http() {
    let shipped = Site::start(Setup::Shipped);
    let (mut browser, tab) = hsts_browser();
    let plain = format!("http://localhost:{}/app/page.html", shipped.envoy.port(LISTENER_PORT));
    let outcome = hsts_outcome(&mut browser, &tab, &shipped, &plain);
    assert_eq!(outcome["internal_redirects"], json!([]), "{outcome:#}");
    assert!(outcome["landed"].as_str().is_some_and(|l| l.contains("net::ERR_")), "{outcome:#}");

    let secure = secure_url(&shipped);
    assert_eq!(hsts_outcome(&mut browser, &tab, &shipped, &secure), upgraded_to(&secure));
}
