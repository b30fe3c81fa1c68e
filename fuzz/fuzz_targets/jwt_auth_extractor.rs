//! jwt-auth's token extractor, `jwt_auth::extract::Extractor::extract`, over two providers that
//! read headers (with and without a prefix, two prefixes on one header), query parameters and
//! cookies. The input is a request: its first line the `:path`, then `<selector byte><value>`
//! lines, the selector picking a header name. Properties:
//! - never panics;
//! - a token comes only from the request: from a header place, a substring of that header's
//!   values as Envoy joins them; from a parameter, a substring of the percent-decoded query
//!   (an independent decoder here); from a cookie, a substring of a `cookie` header;
//! - every place is one a provider named, found at most once per location (header + prefix).
#![no_main]

use jwt_auth::config::Config;
use jwt_auth::extract::{Extractor, Place, RequestHeaders};

const NAMES: &[&str] = &["authorization", "x-token", "cookie", "x-other", "authorization", "cookie"];

const CONFIG: &str = r#"{"providers":{
  "a":{"issuer":"https://a","local_jwks":{"inline_string":"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}]}"},
       "from_headers":[{"name":"authorization","value_prefix":"Bearer "},{"name":"x-token"}],
       "from_params":["access_token","t"],"from_cookies":["s","session"],"forward":false},
  "b":{"issuer":"https://b","local_jwks":{"inline_string":"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}]}"},
       "from_headers":[{"name":"authorization","value_prefix":"Token "}],"from_params":["t"]}},
  "rules":[{"match":{"prefix":"/"},"requires":{"requires_any":{"requirements":[{"provider_name":"a"},{"provider_name":"b"}]}}}]}"#;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `%XX` with two hex digits decoded, anything else kept (the extractor's rule, written again).
fn percent_decoded(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

thread_local! {
    static EXTRACTOR: Extractor = {
        let config: Config = serde_json::from_str(CONFIG).expect("the target's config");
        let compiled = config.compile().expect("the target's config compiles");
        Extractor::new(compiled.providers.iter())
    };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let path = lines.next().unwrap_or_default().to_vec();
    let mut headers = vec![(":path".to_string(), path.clone())];
    for line in lines {
        let Some((&selector, value)) = line.split_first() else { continue };
        headers.push((NAMES[usize::from(selector) % NAMES.len()].to_string(), value.to_vec()));
    }
    let request = RequestHeaders::new(headers);
    let query = path.iter().position(|b| *b == b'?').map(|i| percent_decoded(&path[i + 1..]));
    EXTRACTOR.with(|extractor| {
        let found = extractor.extract(&request);
        for f in &found {
            // `authorization` is read with two prefixes (`Bearer `, `Token `): two locations.
            let most = if f.place == Place::Header("authorization") { 2 } else { 1 };
            assert!(found.iter().filter(|g| g.place == f.place).count() <= most, "{:?} found too often", f.place);
        }
        for f in &found {
            let source = match f.place {
                Place::Header(name) => {
                    assert!(["authorization", "x-token"].contains(&name), "{name}");
                    request.joined(name)
                }
                Place::Param(name) => {
                    assert!(["access_token", "t"].contains(&name), "{name}");
                    query.clone()
                }
                Place::Cookie(name) => {
                    assert!(["s", "session"].contains(&name), "{name}");
                    request.joined("cookie")
                }
            };
            let source = source.unwrap_or_else(|| panic!("{:?} found in a request without it", f.place));
            assert!(contains(&source, &f.token), "{:?}: the token is not in the request", f.place);
        }
    });
});
