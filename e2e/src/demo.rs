//! What `make demo` runs: the demo upstream, token server and JWKS server, and a real Envoy on
//! `envoy-configs/all-in-one.yaml`; and the "Try" list it prints. The list lives here, with
//! what each command must print, so an end-to-end test (`e2e/tests/all_in_one.rs`) runs the
//! very commands a user is shown against the same set-up and keeps them working.

use crate::envoy::{Envoy, EnvoyOptions};
use crate::jwks_server::JwksServer;
use crate::jwt::{self, Alg};
use crate::token_server::TokenServer;
use crate::upstream::Upstream;
use crate::{ADMIN_PORT, JWKS_PORT, LISTENER_PORT, TLS_LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};

pub const CONFIG: &str = "all-in-one.yaml";

pub struct Demo {
    pub envoy: Envoy,
    pub upstream: Upstream,
    pub tokens: TokenServer,
    pub jwks: JwksServer,
    /// A valid one-hour token (RS256, the JWKS server's key) for jwt-auth's `/admin`.
    pub valid_token: String,
    /// The same subject's token, expired an hour ago: refused.
    pub expired_token: String,
}

impl Demo {
    /// The demo's own ports (`make demo`, Envoy's log on this terminal), or fresh ones (tests).
    pub fn start(fixed_ports: bool) -> Result<Demo, String> {
        let port = |fixed: u16| if fixed_ports { fixed } else { 0 };
        let in_use = |what: &str, e: String| format!("{what}: {e} (is another demo running?)");
        // The token and JWKS servers first: token-fetch fetches as Envoy starts.
        // token-fetch's token server: 60-second tokens, refreshed every 48 s.
        let tokens = TokenServer::start(port(TOKEN_SERVER_PORT), 60).map_err(|e| in_use("demo token server", e))?;
        // jwt-auth's JWKS server: the committed test keys' public JWKS.
        let jwks = JwksServer::start(port(JWKS_PORT), &jwt::jwks(&jwt::REMOTE_KEYS))
            .map_err(|e| in_use("demo JWKS server", e))?;
        let mut opts = if fixed_ports {
            EnvoyOptions { fixed_ports: true, log_to_terminal: true, log_level: "warn", ..EnvoyOptions::default() }
        } else {
            EnvoyOptions::default()
        };
        opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
        opts.preset_ports.insert(JWKS_PORT, jwks.port);
        let envoy = Envoy::start_with(CONFIG, opts)?;
        let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).map_err(|e| in_use("demo upstream", e))?;
        let now = jwt::now();
        let expired = jwt::with(jwt::claims("demo-user"), serde_json::json!({"iat": now - 7200, "exp": now - 3600}));
        Ok(Demo {
            envoy,
            upstream,
            tokens,
            jwks,
            valid_token: jwt::token(Alg::RS256, &jwt::claims("demo-user")),
            expired_token: jwt::token(Alg::RS256, &expired),
        })
    }

    /// The "Try" list, with this demo's ports and tokens.
    pub fn try_list(&self) -> Vec<TryCommand> {
        let ports = (self.envoy.port(LISTENER_PORT), self.envoy.port(TLS_LISTENER_PORT), self.envoy.port(ADMIN_PORT));
        try_list(ports, &self.valid_token, &self.expired_token)
    }
}

/// The "Try" list for Envoy's `(http, https, admin)` ports and jwt-auth tokens.
pub fn try_list((http, https, admin): (u16, u16, u16), valid: &str, expired: &str) -> Vec<TryCommand> {
    vec![
        TryCommand::new(
            "security headers added, upstream's Server / X-Powered-By removed; no HSTS over plain HTTP",
            format!("curl -si http://localhost:{http}/api/items"),
        )
        .prints(&["x-content-type-options: nosniff", "content-security-policy: default-src 'none'"])
        .never_prints(&["x-powered-by", "server: demo-upstream", "strict-transport-security"]),
        TryCommand::new(
            "over HTTPS (demo certificate): HSTS too",
            format!("curl -si --cacert envoy-configs/certs/demo-ca.crt https://localhost:{https}/api/items"),
        )
        .prints(&["strict-transport-security: max-age=31536000; includeSubDomains"]),
        TryCommand::new(
            "per-path overrides: relaxed CSP under /docs, SAMEORIGIN framing for /embed/<id>",
            format!("curl -si http://localhost:{http}/docs/index.html"),
        )
        .prints(&["content-security-policy: default-src 'self'"]),
        TryCommand::new("", format!("curl -si http://localhost:{http}/embed/widget-1"))
            .prints(&["x-frame-options: SAMEORIGIN"]),
        TryCommand::new(
            "an upstream's own CSP is kept (append_action ADD_IF_ABSENT)",
            format!(
                "curl -si -H 'x-echo-header: content-security-policy: script-src self' http://localhost:{http}/app"
            ),
        )
        .prints(&["content-security-policy: script-src self"]),
        TryCommand::new(
            "rate-limit: POST /login allows 3 per client, then 1 every 20 s; the 4th gets 429,\n\
                 Retry-After and the RateLimit headers",
            format!(
                "for i in 1 2 3 4; do curl -si -X POST http://localhost:{http}/login \
                     | grep -iE '^(HTTP/|retry-after|ratelimit)'; done"
            ),
        )
        .prints(&["HTTP/1.1 200", "HTTP/1.1 429", "retry-after: ", "\"login\";r=0", "ratelimit-policy: "]),
        TryCommand::new(
            "body-logger: a POST with secrets reaches the upstream unchanged (its echo); the access log\n\
                 line in the demo's terminal shows the body with the password and card number redacted",
            format!(
                "curl -s -H 'content-type: application/json' \
                     -d '{{\"user\":\"ann\",\"password\":\"hunter2\",\"card\":\"4111 1111 1111 1111\"}}' \
                     http://localhost:{http}/api/login"
            ),
        )
        .prints(&["\"password\":\"hunter2\""])
        .logs(&["[access] POST /api/login 200", "\\\"password\\\":\\\"[REDACTED]\\\""])
        .never_logs(&["hunter2", "4111 1111 1111 1111"]),
        TryCommand::new(
            "token-fetch: the upstream's echo shows the injected `authorization: Bearer tok-N`",
            format!("curl -s http://localhost:{http}/api/items | grep -o '\"authorization\",\"[^\"]*\"'"),
        )
        .prints(&["\"authorization\",\"Bearer tok-"]),
        TryCommand::new(
            "jwt-auth: /admin needs a JWT: 401 `Jwt is missing` without one, 401 `Jwt is expired` with\n\
                 an expired one; with this one-hour test token the upstream's echo shows the verified\n\
                 `x-jwt-sub` and no client Authorization",
            format!("curl -si http://localhost:{http}/admin/users"),
        )
        .prints(&["HTTP/1.1 401", "Jwt is missing"]),
        TryCommand::new(
            "",
            format!("curl -si -H 'authorization: Bearer {expired}' http://localhost:{http}/admin/users"),
        )
        .prints(&["HTTP/1.1 401", "Jwt is expired"]),
        TryCommand::new("", format!("curl -s -H 'authorization: Bearer {valid}' http://localhost:{http}/admin/users"))
            .prints(&["\"x-jwt-sub\",\"demo-user\"", "\"authorization\",\"Bearer tok-"])
            .never_prints(&[valid]),
        TryCommand::new("the filters' stats", format!("curl -s http://localhost:{admin}/stats | grep wasmcustom"))
            .prints(&[
                "wasmcustom.security_headers.responses_decorated",
                "wasmcustom.rate_limit.",
                "wasmcustom.body_logger.redactions",
                "wasmcustom.jwt_auth.",
                "wasmcustom.token_fetch.",
            ]),
    ]
}

/// One command of the "Try" list: what it shows (a comment, empty to continue the previous
/// one), the shell command, and what its output and Envoy's output (the access log) must and
/// must not contain for it to have shown that.
#[derive(Clone, Debug)]
pub struct TryCommand {
    pub about: String,
    pub command: String,
    pub output_has: Vec<String>,
    pub output_lacks: Vec<String>,
    pub log_has: Vec<String>,
    pub log_lacks: Vec<String>,
}

impl TryCommand {
    fn new(about: &str, command: String) -> TryCommand {
        TryCommand {
            about: about.to_string(),
            command,
            output_has: vec![],
            output_lacks: vec![],
            log_has: vec![],
            log_lacks: vec![],
        }
    }
    fn prints(mut self, texts: &[&str]) -> Self {
        self.output_has.extend(texts.iter().map(|t| t.to_string()));
        self
    }
    fn never_prints(mut self, texts: &[&str]) -> Self {
        self.output_lacks.extend(texts.iter().map(|t| t.to_string()));
        self
    }
    fn logs(mut self, texts: &[&str]) -> Self {
        self.log_has.extend(texts.iter().map(|t| t.to_string()));
        self
    }
    fn never_logs(mut self, texts: &[&str]) -> Self {
        self.log_lacks.extend(texts.iter().map(|t| t.to_string()));
        self
    }
}

/// The list as the demo prints it: `# about` lines, then the command, indented.
pub fn render(list: &[TryCommand]) -> String {
    let mut out = String::new();
    for item in list {
        if !item.about.is_empty() {
            out.push('\n');
            for line in item.about.lines() {
                out.push_str(&format!("  # {}\n", line.trim_start()));
            }
        }
        out.push_str(&format!("  {}\n", item.command));
    }
    out
}
