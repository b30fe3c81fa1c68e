//! Where tokens are found, as jwt_authn's extractor finds them: header locations first (in
//! order of header name + prefix), then query parameters, then cookies (each in name order);
//! every location a provider names is read, so a request can carry several tokens. A header
//! location's token starts at the first token character after its prefix's first occurrence.

use crate::config::{Location, Provider};
use std::collections::BTreeMap;

/// The issuers whose providers named a location (jwt_authn `JwtIssuerChecker`): a provider
/// without `issuer` admits any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Issuers {
    any: bool,
    names: Vec<String>,
}

impl Issuers {
    fn add(&mut self, issuer: &str) {
        if issuer.is_empty() {
            self.any = true;
        } else if !self.names.iter().any(|n| n == issuer) {
            self.names.push(issuer.to_string());
        }
    }
    pub fn allows(&self, issuer: &str) -> bool {
        self.any || self.names.iter().any(|n| n == issuer)
    }
}

/// A token found in a request, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<'e> {
    pub token: Vec<u8>,
    /// The header to remove when the token is not forwarded (`None`: params and cookies,
    /// which jwt_authn leaves in place too).
    pub header: Option<&'e str>,
    pub issuers: &'e Issuers,
}

/// The token locations of one provider, or of all providers (for `allow_missing*`).
#[derive(Clone, Debug, Default)]
pub struct Extractor {
    /// Keyed by header name + prefix, as jwt_authn orders them.
    headers: BTreeMap<String, (String, String, Issuers)>,
    params: BTreeMap<String, Issuers>,
    cookies: BTreeMap<String, Issuers>,
}

impl Extractor {
    pub fn new<'p>(providers: impl IntoIterator<Item = &'p Provider>) -> Extractor {
        let mut e = Extractor::default();
        for p in providers {
            for l in &p.locations {
                match l {
                    Location::Header(name, prefix) => {
                        let entry = e
                            .headers
                            .entry(format!("{name}{prefix}"))
                            .or_insert_with(|| (name.clone(), prefix.clone(), Issuers::default()));
                        entry.2.add(&p.issuer);
                    }
                    Location::Param(name) => e.params.entry(name.clone()).or_default().add(&p.issuer),
                    Location::Cookie(name) => e.cookies.entry(name.clone()).or_default().add(&p.issuer),
                }
            }
        }
        e
    }

    pub fn extract<'e>(&'e self, request: &RequestHeaders) -> Vec<Found<'e>> {
        let mut found = Vec::new();
        for (name, prefix, issuers) in self.headers.values() {
            let Some(value) = request.joined(name) else { continue };
            let token = if prefix.is_empty() {
                value
            } else {
                // As Envoy 1.36–1.40 (checked by the differential test): after the first
                // occurrence of the prefix, skip to the first base64url/dot character and take
                // everything from there ("Bearer a,Bearer b" is one bad token).
                let Some(pos) = find(&value, prefix.as_bytes()) else { continue };
                let rest = &value[pos + prefix.len()..];
                match rest.iter().position(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                    Some(start) => rest[start..].to_vec(),
                    None => value.clone(),
                }
            };
            found.push(Found { token, header: Some(name.as_str()), issuers });
        }
        if !self.params.is_empty() {
            if let Some(query) =
                request.get(":path").and_then(|p| p.iter().position(|b| *b == b'?').map(|i| &p[i + 1..]))
            {
                let params = parse_query(query);
                for (name, issuers) in &self.params {
                    if let Some((_, v)) = params.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                        found.push(Found { token: v.clone(), header: None, issuers });
                    }
                }
            }
        }
        if !self.cookies.is_empty() {
            let cookies = request.cookies();
            for (name, issuers) in &self.cookies {
                if let Some((_, v)) = cookies.iter().find(|(k, _)| *k == name.as_bytes()) {
                    found.push(Found { token: v.to_vec(), header: None, issuers });
                }
            }
        }
        found
    }
}

/// The request's headers, read once (one host call) and looked up many times.
#[derive(Clone, Debug, Default)]
pub struct RequestHeaders(pub Vec<(String, Vec<u8>)>);

impl RequestHeaders {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    pub fn get_str(&self, name: &str) -> &str {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default()
    }

    /// All values of a header joined by `,` (Envoy's `getAllOfHeaderAsString`).
    pub fn joined(&self, name: &str) -> Option<Vec<u8>> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_slice());
        let first = values.next()?;
        let mut out = first.to_vec();
        for v in values {
            out.push(b',');
            out.extend_from_slice(v);
        }
        Some(out)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    /// Cookie pairs from every `cookie` header; the first of a name wins; values lose one pair
    /// of surrounding double quotes (Envoy's `parseCookies`).
    fn cookies(&self) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        for (_, v) in self.0.iter().filter(|(k, _)| k == "cookie") {
            for pair in v.split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
                let (k, mut value) = (&pair[..eq], &pair[eq + 1..]);
                if value.len() >= 2 && value.first() == Some(&b'"') && value.last() == Some(&b'"') {
                    value = &value[1..value.len() - 1];
                }
                if !out.iter().any(|(seen, _)| *seen == k) {
                    out.push((k, value));
                }
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `a=1&b=%2Fx` → pairs, percent-decoded; the first occurrence of a name is what counts.
fn parse_query(query: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let query = query.split(|b| *b == b'#').next().unwrap_or_default();
    query
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|b| *b == b'=') {
            Some(i) => (percent_decode(&p[..i]), percent_decode(&p[i + 1..])),
            None => (percent_decode(p), Vec::new()),
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_cookies() {
        let q = parse_query(b"a=1&access_token=x%2Ey&access_token=second&flag");
        assert_eq!(q[1], (b"access_token".to_vec(), b"x.y".to_vec()));
        assert_eq!(q[3], (b"flag".to_vec(), Vec::new()));
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
        let h = RequestHeaders(vec![
            ("cookie".into(), b"a=1; jwt=\"t.o.k\"; jwt=second".to_vec()),
            ("cookie".into(), b"b=2".to_vec()),
        ]);
        let c = h.cookies();
        assert_eq!(c, vec![(&b"a"[..], &b"1"[..]), (&b"jwt"[..], &b"t.o.k"[..]), (&b"b"[..], &b"2"[..])]);
    }

    #[test]
    fn joined_values() {
        let h =
            RequestHeaders(vec![("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec()), ("x".into(), b"3".to_vec())]);
        assert_eq!(h.joined("x").unwrap(), b"1,3");
        assert_eq!(h.joined("z"), None);
    }
}
