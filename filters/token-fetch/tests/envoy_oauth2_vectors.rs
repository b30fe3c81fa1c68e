//! Peer vectors: the token-endpoint answers of Envoy's own OAuth2 client tests, through our
//! parser (`token_from_answer`), beside what Envoy's client does with them.
//!
//! Sources (envoyproxy/envoy, read for this table; no code copied):
//! - `test/extensions/filters/http/oauth2/oauth_test.cc` (`OAuth2ClientTest.*`, the oauth2
//!   filter's client);
//! - `test/extensions/http/credential_injector/oauth2/credential_injector_oauth_integration_test.cc`
//!   (the credential injector's client, the filter whose fields token-fetch follows). Its fake
//!   token server answers with `OAuthResponse` rendered by protobuf's JSON printer, which spells
//!   the `UInt64Value` `expires_in` as a string (`"20"`);
//! - `source/extensions/http/injected_credentials/oauth2/oauth_client.cc` and
//!   `oauth_response.proto`: the answer is read with protobuf's JSON parser into
//!   `{StringValue access_token, UInt64Value expires_in}`, unknown fields ignored, `token_type`
//!   never looked at; a missing `access_token` or `expires_in` is a failure. The rows marked
//!   "mapping" follow from that parser's rules for a `UInt64Value` (a whole number in any
//!   spelling, or a string of digits), not from an Envoy test.
//!
//! Where we differ, the row says why; the test fails if our verdict changes, or if a
//! difference has no reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure is a finding

use shared::fetch::FetchResult;
use std::time::Duration;
use token_fetch::config::{Compiled, Config};
use token_fetch::filter::token_from_answer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Accepted: the header value and the lifetime in seconds.
    Accept(&'static str, u64),
    Refuse,
}
use Verdict::{Accept, Refuse};

struct Vector {
    from: &'static str,
    status: &'static str,
    body: &'static str,
    /// The credential injector's client (the oauth2 filter's where `from` says so).
    envoy: Verdict,
    ours: Verdict,
    /// Why we differ (empty when we agree).
    why: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        from: "oauth_test.cc RequestAccessTokenSuccess",
        status: "200",
        body: r#"{"access_token": "golden ticket", "expires_in": 1000}"#,
        envoy: Accept("Bearer golden ticket", 1000),
        ours: Accept("Bearer golden ticket", 1000),
        why: "",
    },
    Vector {
        from: "oauth_test.cc RequestAccessTokenMissingExpiresIn; credential injector good_token=false",
        status: "200",
        body: r#"{"access_token": "golden ticket"}"#,
        envoy: Refuse,
        ours: Accept("Bearer golden ticket", 300),
        why: "RFC 6749 §5.1 makes expires_in RECOMMENDED, not required: we use the token for 300 s \
              (the oauth2 filter does the same when given a default_expires_in: \
              RequestAccessTokenDefaultExpiresIn)",
    },
    Vector {
        from: "oauth_test.cc RequestAccessTokenIncompleteResponse",
        status: "200",
        body: r#"{"expires_in": 1000}"#,
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "oauth_test.cc RequestAccessTokenErrorResponse",
        status: "500",
        body: "",
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "oauth_test.cc RequestAccessTokenInvalidResponse",
        status: "200",
        body: r#"{"expires_in": "some_string"}"#,
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "oauth_test.cc RequestAccessTokenUnhealthyUpstream; credential injector success=false",
        status: "503",
        body: "",
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "credential injector good_json=false",
        status: "200",
        body: "bad json",
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "credential injector handleOauth2TokenRequest (protobuf's JSON of OAuthResponse)",
        status: "200",
        body: r#"{"access_token":"test-access-token","expires_in":"20"}"#,
        envoy: Accept("Bearer test-access-token", 20),
        ours: Accept("Bearer test-access-token", 20),
        why: "",
    },
    Vector {
        from: "mapping: an integral number spelled as a float",
        status: "200",
        body: r#"{"access_token":"a","expires_in":3.6e3}"#,
        envoy: Accept("Bearer a", 3600),
        ours: Accept("Bearer a", 3600),
        why: "",
    },
    Vector {
        from: "mapping: a fraction is not a UInt64Value",
        status: "200",
        body: r#"{"access_token":"a","expires_in":3599.5}"#,
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "mapping: a negative number is not a UInt64Value",
        status: "200",
        body: r#"{"access_token":"a","expires_in":-1}"#,
        envoy: Refuse,
        ours: Refuse,
        why: "",
    },
    Vector {
        from: "mapping: zero is a UInt64Value",
        status: "200",
        body: r#"{"access_token":"a","expires_in":0}"#,
        envoy: Accept("Bearer a", 0),
        ours: Refuse,
        why: "a token that expires as it arrives cannot be sent; the fetch fails and is retried \
              with backoff (the injector would refresh in a loop, at expires_in / 2 = 0)",
    },
    Vector {
        from: "mapping: ten years",
        status: "200",
        body: r#"{"access_token":"a","expires_in":315360000}"#,
        envoy: Accept("Bearer a", 315_360_000),
        ours: Accept("Bearer a", 366 * 86_400),
        why: "used at most 366 days (refreshed at 80% of that): a lifetime the proxy cannot check \
              is not trusted for longer",
    },
    Vector {
        from: "RFC 6749 §5.1: token_type is case-insensitive (the injector does not read it)",
        status: "200",
        body: r#"{"access_token":"a","token_type":"bEARER","expires_in":60}"#,
        envoy: Accept("Bearer a", 60),
        ours: Accept("Bearer a", 60),
        why: "",
    },
    Vector {
        from: "credential injector: token_type is never read",
        status: "200",
        body: r#"{"access_token":"a","token_type":"DPoP","expires_in":60}"#,
        envoy: Accept("Bearer a", 60),
        ours: Refuse,
        why: "a DPoP or MAC token sent as Bearer is refused by an upstream that checks the binding \
              (RFC 9449), or is a downgrade: the fetch fails and says which token_type came",
    },
    Vector {
        from: "credential injector: the token goes into the header unchecked (absl::StrCat)",
        status: "200",
        body: r#"{"access_token":"a\r\nx-injected: 1","expires_in":60}"#,
        envoy: Accept("Bearer a\r\nx-injected: 1", 60),
        ours: Refuse,
        why: "CR LF or NUL in a header value splits or ends it: never injected",
    },
];

fn oauth2_config() -> Compiled {
    let json = r#"{"oauth2":{"token_endpoint":{"cluster":"oauth","uri":"http://oauth.com/token","timeout":"3s"},
        "client_credentials":{"client_id":"test_client_id","client_secret":"test_client_secret"}}}"#;
    shared::config::load(Some(json.as_bytes()), Config::compile).expect("the configuration compiles")
}

/// Our verdict, as the table spells it.
fn ours(c: &Compiled, v: &Vector) -> Option<(String, u64)> {
    match token_from_answer(c, Some(v.status), |_| None, || v.body.as_bytes().to_vec()) {
        FetchResult::Fetched { value, lifetime } => {
            Some((String::from_utf8(value).expect("an accepted value is ASCII"), lifetime.as_secs()))
        }
        FetchResult::Failed(_) => None,
    }
}

fn spelled(verdict: Verdict) -> Option<(String, u64)> {
    match verdict {
        Accept(value, secs) => Some((value.to_string(), secs)),
        Refuse => None,
    }
}

#[test]
fn envoy_oauth2_client_token_answers_through_our_parser() {
    let c = oauth2_config();
    let mut differences = 0;
    for v in VECTORS {
        assert_eq!(ours(&c, v), spelled(v.ours), "{}: {} {}", v.from, v.status, v.body);
        if v.envoy == v.ours {
            assert!(v.why.is_empty(), "{}: a reason for a difference that is not there", v.from);
        } else {
            assert!(!v.why.is_empty(), "{}: we differ from Envoy without a reason", v.from);
            differences += 1;
        }
    }
    // The differences are few and deliberate; a new one needs a row and a reason.
    assert_eq!(differences, 5);
    assert_eq!(token_fetch::filter::MAX_OAUTH2_LIFETIME, Duration::from_secs(366 * 86_400));
}
