//! What several test files share (a module of each test crate that declares `mod common;`).

use shared::config::ConfigError;
use shared::mock::MockHost;
use shared::RootFilter;

fn configure<R: RootFilter + Default>(json: &str) -> Result<(), ConfigError> {
    R::default().configure(&MockHost::new(), Some(json.as_bytes()))
}

/// A filter's own verdict on a configuration (both phases: parse with field paths, then
/// `compile`), natively with a mock host. `None` for a filter these tests do not compile (a
/// new one from `make new-filter`, in a fork: Envoy checks it, which needs `make build`);
/// add it here to check it natively.
pub fn configure_natively(filter: &str, json: &str) -> Option<Result<(), ConfigError>> {
    Some(match filter {
        "body-logger" => configure::<body_logger::filter::BodyLoggerRoot>(json),
        "jwt-auth" => configure::<jwt_auth::filter::JwtAuthRoot>(json),
        "rate-limit" => configure::<rate_limit::filter::RateLimitRoot>(json),
        "security-headers" => configure::<security_headers::filter::SecurityHeadersRoot>(json),
        "token-fetch" => configure::<token_fetch::filter::TokenFetchRoot>(json),
        _ => return None,
    })
}
