//! Where tokens are found, as jwt_authn's extractor finds them: header locations first (in
//! order of header name + prefix), then query parameters, then cookies (each in name order);
//! every location a provider names is read, so a request can carry several tokens. A header
//! location's token starts at the first token character after its prefix's first occurrence.

use crate::config::{Location, Provider};
use shared::headers::HeaderPairs;
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

/// Where a token was found: a header, a query parameter or a cookie, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place<'e> {
    Header(&'e str),
    Param(&'e str),
    Cookie(&'e str),
}

/// A token found in a request, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<'e> {
    pub token: Vec<u8>,
    pub place: Place<'e>,
    pub issuers: &'e Issuers,
    /// Every provider that reads this place (in this extractor) has `forward: false`: the
    /// token is removed from a request that goes on, whether it verified or not.
    pub strip: bool,
}

/// Who reads one place: the issuers (for the issuer check) and whether all have
/// `forward: false`.
#[derive(Clone, Debug)]
struct Readers {
    issuers: Issuers,
    strip: bool,
}

impl Default for Readers {
    fn default() -> Readers {
        Readers { issuers: Issuers::default(), strip: true }
    }
}

impl Readers {
    fn add(&mut self, p: &Provider) {
        self.issuers.add(&p.issuer);
        self.strip &= !p.forward;
    }
}

/// The token locations of one provider, or of all providers (for `allow_missing*`).
#[derive(Clone, Debug, Default)]
pub struct Extractor {
    /// Keyed by header name + prefix, as jwt_authn orders them.
    headers: BTreeMap<String, (String, String, Readers)>,
    params: BTreeMap<String, Readers>,
    cookies: BTreeMap<String, Readers>,
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
                            .or_insert_with(|| (name.clone(), prefix.clone(), Readers::default()));
                        entry.2.add(p);
                    }
                    Location::Param(name) => e.params.entry(name.clone()).or_default().add(p),
                    Location::Cookie(name) => e.cookies.entry(name.clone()).or_default().add(p),
                }
            }
        }
        e
    }

    pub fn extract<'e>(&'e self, request: &RequestHeaders) -> Vec<Found<'e>> {
        let mut found = Vec::new();
        for (name, prefix, readers) in self.headers.values() {
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
            found.push(Found { token, place: Place::Header(name), issuers: &readers.issuers, strip: readers.strip });
        }
        if !self.params.is_empty() {
            if let Some(query) = request.get(":path").and_then(query_of) {
                let params = parse_query(query);
                for (name, readers) in &self.params {
                    if let Some((_, v)) = params.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                        found.push(Found {
                            token: v.clone(),
                            place: Place::Param(name),
                            issuers: &readers.issuers,
                            strip: readers.strip,
                        });
                    }
                }
            }
        }
        if !self.cookies.is_empty() {
            let cookies = request.cookies();
            for (name, readers) in &self.cookies {
                if let Some((_, v)) = cookies.iter().find(|(k, _)| *k == name.as_bytes()) {
                    found.push(Found {
                        token: v.to_vec(),
                        place: Place::Cookie(name),
                        issuers: &readers.issuers,
                        strip: readers.strip,
                    });
                }
            }
        }
        found
    }
}

/// The request's headers, read once (one host call, [`Host::header_pairs`]) and looked up many
/// times: the host's buffer and where each name and value lie in it, so the read costs no
/// allocation per header. Names compare exactly (Envoy's are lowercase).
///
/// [`Host::header_pairs`]: shared::Host::header_pairs
#[derive(Clone, Debug, Default)]
pub struct RequestHeaders {
    raw: HeaderPairs,
    /// Name and value of each header still in the map, in order: (start, length) in `raw`.
    spans: Vec<[(usize, usize); 2]>,
}

impl RequestHeaders {
    /// From owned pairs (tests, fuzzing).
    pub fn new(pairs: Vec<(String, Vec<u8>)>) -> RequestHeaders {
        RequestHeaders::from_raw(HeaderPairs::from_pairs(&pairs))
    }

    /// From the host's buffer.
    pub fn from_raw(raw: HeaderPairs) -> RequestHeaders {
        let base = raw.as_bytes().as_ptr() as usize;
        let span = |s: &[u8]| ((s.as_ptr() as usize).wrapping_sub(base), s.len());
        let spans = raw.pairs().iter().map(|(n, v)| [span(n), span(v)]).collect();
        RequestHeaders { raw, spans }
    }

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        start.checked_add(len).and_then(|end| self.raw.as_bytes().get(start..end)).unwrap_or_default()
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|[n, v]| (self.slice(*n), self.slice(*v)))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| v)
    }

    pub fn get_str(&self, name: &str) -> &str {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default()
    }

    /// All values of a header joined by `,` (Envoy's `getAllOfHeaderAsString`).
    pub fn joined(&self, name: &str) -> Option<Vec<u8>> {
        let mut values = self.iter().filter(|(k, _)| *k == name.as_bytes()).map(|(_, v)| v);
        let first = values.next()?;
        let mut out = first.to_vec();
        for v in values {
            out.push(b',');
            out.extend_from_slice(v);
        }
        Some(out)
    }

    pub fn remove(&mut self, name: &str) {
        let raw = self.raw.as_bytes();
        self.spans.retain(|[(start, len), _]| {
            start.checked_add(*len).and_then(|end| raw.get(*start..end)) != Some(name.as_bytes())
        });
    }

    /// `:path` without the query pairs whose percent-decoded name is one of `names` (all of
    /// them, as jwt_authn removes a parameter). The other pairs keep their bytes and order
    /// (jwt_authn decodes and sorts them: not copied, see the README); empty pairs go, and a
    /// query left empty loses its `?`. `None`: no such pair.
    pub fn path_without_params(&self, names: &[&str]) -> Option<Vec<u8>> {
        let path = self.get(":path")?;
        let q = path.iter().position(|b| *b == b'?')?;
        let (base, rest) = (&path[..q], &path[q + 1..]);
        let (query, fragment) = match rest.iter().position(|b| *b == b'#') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, &rest[rest.len()..]),
        };
        let mut removed = false;
        let kept: Vec<&[u8]> = query
            .split(|b| *b == b'&')
            .filter(|pair| {
                let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                let drop = !pair.is_empty() && names.iter().any(|n| percent_decode(name) == n.as_bytes());
                removed |= drop;
                !drop && !pair.is_empty()
            })
            .collect();
        if !removed {
            return None;
        }
        let mut out = base.to_vec();
        if !kept.is_empty() {
            out.push(b'?');
            out.extend_from_slice(&kept.join(&b'&'));
        }
        out.extend_from_slice(fragment);
        Some(out)
    }

    /// The `cookie` headers without the cookies named in `names`: each header's other pairs
    /// joined by `; `, a header left empty dropped. `None`: no such cookie.
    pub fn cookies_without(&self, names: &[&str]) -> Option<Vec<Vec<u8>>> {
        let mut removed = false;
        let mut out = Vec::new();
        for (_, v) in self.iter().filter(|(k, _)| *k == b"cookie") {
            let kept: Vec<&[u8]> = v
                .split(|b| *b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| {
                    let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                    let drop = pair.contains(&b'=') && names.iter().any(|n| name == n.as_bytes());
                    removed |= drop;
                    !drop && !pair.is_empty()
                })
                .collect();
            if !kept.is_empty() {
                out.push(kept.join(&b"; "[..]));
            }
        }
        removed.then_some(out)
    }

    /// Cookie pairs from every `cookie` header; the first of a name wins; values lose one pair
    /// of surrounding double quotes (Envoy's `parseCookies`).
    fn cookies(&self) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        for (_, v) in self.iter().filter(|(k, _)| *k == b"cookie") {
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

/// The query of a `:path` (after the first `?`), if any.
fn query_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().position(|b| *b == b'?').map(|i| &path[i + 1..])
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
        let h = RequestHeaders::new(vec![
            ("cookie".into(), b"a=1; jwt=\"t.o.k\"; jwt=second".to_vec()),
            ("cookie".into(), b"b=2".to_vec()),
        ]);
        let c = h.cookies();
        assert_eq!(c, vec![(&b"a"[..], &b"1"[..]), (&b"jwt"[..], &b"t.o.k"[..]), (&b"b"[..], &b"2"[..])]);
    }

    #[test]
    fn joined_values() {
        let h = RequestHeaders::new(vec![
            ("x".into(), b"1".to_vec()),
            ("y".into(), b"2".to_vec()),
            ("x".into(), b"3".to_vec()),
        ]);
        assert_eq!(h.joined("x").unwrap(), b"1,3");
        assert_eq!(h.joined("z"), None);
    }
}
