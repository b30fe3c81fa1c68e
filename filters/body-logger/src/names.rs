//! Which names are sensitive. One rule for every place a name appears: JSON keys, form fields,
//! `name: value` / `name=value` pairs in text, query, fragment and `;` path parameters, XML
//! elements and attributes, multipart part names, and header names.
//!
//! A name is split into *segments* at `.`, `[`, `]`, `:` and `/` (`user[password]`,
//! `spring.datasource.password`, `wsse:Password`); `%XX` is decoded first where names may be
//! percent-encoded. Each segment is *normalised*: ASCII letters lowercased, every other ASCII
//! byte that is not a letter or a digit dropped (`_`, `-`, spaces, `$`…), non-ASCII bytes
//! kept. So `newPassword`, `new_password`, `NEW-PASSWORD` and `new password` are one name,
//! `newpassword`. A name is sensitive when one of its segments is:
//!
//! 1. equal to an *exact name* (`redact.fields`, plus `redact.headers` for header names); or
//! 2. after every *harmless name* it holds is blanked out, still holds a *sensitive part*
//!    ([`SENSITIVE_PARTS`], fixed). Short, common parts (`key`, `pass`, `pin`, `auth`) are not
//!    parts: they match only as exact names, so `monkey`, `passenger`, `spinner` and `author`
//!    stay readable.

/// Sensitive parts, normalised. A segment holding one of these anywhere is sensitive (unless
/// only inside a harmless name). Fixed on purpose: it is the floor every configuration gets.
pub const SENSITIVE_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "accountkey",
    "masterkey",
    "signingkey",
    "encryptionkey",
    "credential",
    "session",
    "sessid",
    "cookie",
    "authorization",
    "signature",
    "csrf",
    "xsrf",
    "creditcard",
    "cardnumber",
    "ccnumber",
    "securitycode",
    "cvv",
    "cvc",
];

/// Names that hold a sensitive part but carry no secret. Blanked out of a segment before parts
/// are looked for: `access_token_type` and `total_tokens` stay readable, `possession_token`
/// does not (the `token` left over).
pub const DEFAULT_HARMLESS_FIELDS: &[&str] = &[
    // OAuth 2.0 token responses and OpenID Connect discovery documents.
    "token_type",
    "expires_in",
    "expires_at",
    "ext_expires_in",
    "refresh_expires_in",
    "refresh_token_expires_in",
    "token_endpoint",
    "token_endpoint_auth_method",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "id_token_signing_alg_values_supported",
    "id_token_encryption_alg_values_supported",
    "id_token_encryption_enc_values_supported",
    "authorization_endpoint",
    "end_session_endpoint",
    "check_session_iframe",
    // Token counts of language-model APIs.
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "max_tokens",
    "max_output_tokens",
    "max_completion_tokens",
    // Request-signing metadata (AWS SigV2, OAuth 1.0a), not the signature.
    "signature_method",
    "signature_version",
    // CORS: a yes/no.
    "access-control-allow-credentials",
    // English words holding a part.
    "secretary",
    "secretariat",
    "possession",
    "accession",
    "concession",
    "succession",
    "procession",
    "recession",
    "obsession",
];

/// Where a name splits into segments.
const SEPARATORS: [char; 5] = ['.', '[', ']', ':', '/'];

/// The longest normalised segment kept on the stack; longer ones go to the heap.
const INLINE: usize = 96;

/// The compiled rule: exact names and harmless names, normalised.
#[derive(Clone, Debug)]
pub struct NameRule {
    exact: Vec<Vec<u8>>,
    /// Exact names that span segments (`user.password`): compared with the whole name.
    exact_whole: Vec<Vec<u8>>,
    /// Longest first, so `refresh_token_expires_in` is blanked before `expires_in`.
    harmless: Vec<Vec<u8>>,
}

/// `%XX` decoding (and `+`, a space in forms) for names that may be percent-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Percent,
}

impl NameRule {
    pub fn new<S: AsRef<str>>(exact: &[S], harmless: &[S]) -> NameRule {
        let norm = |list: &mut dyn Iterator<Item = &str>| -> Vec<Vec<u8>> {
            let mut out: Vec<Vec<u8>> = Vec::new();
            for s in list {
                let n = normalize(s.as_bytes());
                if !n.is_empty() && !out.contains(&n) {
                    out.push(n);
                }
            }
            out
        };
        let mut harmless = norm(&mut harmless.iter().map(AsRef::as_ref));
        harmless.sort_by_key(|h| std::cmp::Reverse(h.len()));
        let exact_whole = norm(&mut exact.iter().map(AsRef::as_ref).filter(|s| s.contains(SEPARATORS)));
        NameRule { exact: norm(&mut exact.iter().map(AsRef::as_ref)), exact_whole, harmless }
    }

    /// Whether `name` (as it appears in the text, quotes and escapes other than `%XX` already
    /// removed) is sensitive.
    pub fn is_sensitive(&self, name: &[u8], encoding: Encoding) -> bool {
        let mut inline = [0u8; INLINE];
        let mut heap: Vec<u8> = Vec::new();
        let mut len = 0usize;
        let mut k = 0usize;
        let mut found = false;
        // The whole name normalised, only when an exact name spans segments.
        let mut whole: Option<Vec<u8>> = (!self.exact_whole.is_empty()).then(Vec::new);
        // One pass: decode, split at separators, normalise into the segment buffer; check each
        // segment as it ends (the end of the name ends the last one).
        loop {
            let byte = match name.get(k) {
                None => None,
                Some(b'%') if encoding == Encoding::Percent => match (name.get(k + 1), name.get(k + 2)) {
                    (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                        k += 2;
                        Some(hex(*h) << 4 | hex(*l))
                    }
                    _ => Some(b'%'),
                },
                Some(b'+') if encoding == Encoding::Percent => Some(b' '),
                Some(b) => Some(*b),
            };
            k += 1;
            match byte {
                None | Some(b'.' | b'[' | b']' | b':' | b'/') => {
                    if len > 0 {
                        let seg: &mut [u8] = if len <= INLINE { &mut inline[..len] } else { &mut heap[..] };
                        found |= self.segment_is_sensitive(seg);
                    }
                    if byte.is_none() {
                        return found || whole.is_some_and(|w| self.exact_whole.contains(&w));
                    }
                    if found {
                        return true;
                    }
                    len = 0;
                    heap.clear();
                }
                Some(b) => {
                    let c = if b.is_ascii() {
                        if !b.is_ascii_alphanumeric() {
                            continue;
                        }
                        b.to_ascii_lowercase()
                    } else {
                        b
                    };
                    if let Some(w) = whole.as_mut() {
                        w.push(c);
                    }
                    if len < INLINE {
                        inline[len] = c;
                    } else {
                        if len == INLINE {
                            heap.extend_from_slice(&inline);
                        }
                        heap.push(c);
                    }
                    len += 1;
                }
            }
        }
    }

    /// `seg` is normalised; it may be overwritten (harmless names blanked).
    fn segment_is_sensitive(&self, seg: &mut [u8]) -> bool {
        if self.exact.iter().any(|e| e.as_slice() == &*seg) {
            return true;
        }
        if !holds_part(seg) {
            return false;
        }
        let mut blanked = false;
        for h in &self.harmless {
            let mut from = 0;
            while let Some(p) = find(seg, from, h) {
                seg[p..p + h.len()].fill(0);
                from = p + h.len();
                blanked = true;
            }
        }
        !blanked || holds_part(seg)
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// The normalised form of a configured name (the separators are not split here: a configured
/// exact name is one segment).
pub fn normalize(name: &[u8]) -> Vec<u8> {
    name.iter()
        .filter(|b| !b.is_ascii() || b.is_ascii_alphanumeric())
        .map(|b| if b.is_ascii() { b.to_ascii_lowercase() } else { *b })
        .collect()
}

fn holds_part(seg: &[u8]) -> bool {
    (0..seg.len()).any(|i| {
        let mut parts = PARTS_BY_FIRST_BYTE[usize::from(seg[i])];
        while parts != 0 {
            let part = SENSITIVE_PARTS.get(parts.trailing_zeros() as usize).map_or(&[][..], |p| p.as_bytes());
            if seg.get(i..i + part.len()) == Some(part) {
                return true;
            }
            parts &= parts - 1;
        }
        false
    })
}

/// Per byte, the sensitive parts that start with it (bit `j`: `SENSITIVE_PARTS[j]`). Every key
/// and text name is looked at: one lookup a byte, then only the parts that can start there (a
/// search for each of the 25 parts cost a third of redacting an ordinary API body).
const PARTS_BY_FIRST_BYTE: [u32; 256] = {
    assert!(SENSITIVE_PARTS.len() <= 32, "one bit per part");
    let mut t = [0u32; 256];
    let mut j = 0;
    while j < SENSITIVE_PARTS.len() {
        t[SENSITIVE_PARTS[j].as_bytes()[0] as usize] |= 1 << j;
        j += 1;
    }
    t
};

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let p = i + hay.get(i..)?.iter().position(|c| *c == first)?;
        if p + needle.len() > hay.len() {
            return None;
        }
        if hay.get(p..p + needle.len()) == Some(needle) {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_REDACT_FIELDS;

    fn rule() -> NameRule {
        NameRule::new(DEFAULT_REDACT_FIELDS, DEFAULT_HARMLESS_FIELDS)
    }

    #[test]
    fn the_review_names_are_sensitive() {
        let r = rule();
        for name in [
            // B2: JSON keys of the review.
            "accessToken",
            "refreshToken",
            "clientSecret",
            "idToken",
            "privateKey",
            "newPassword",
            "password_confirmation",
            "sessionToken",
            // B2: environment-style text names.
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            // B5/B6.
            "cc-number",
            "cardnumber",
            "jsessionid",
            "session_id",
            "x-goog-api-key",
            "api-key",
            "x-vault-token",
            "private-token",
            // Still: the old exact names, segments, short names as whole names.
            "password",
            "user[password]",
            "user.password",
            "wsse:Password",
            "Set-Cookie",
            "pin",
            "PIN",
            "otp",
            "key",
            "auth",
            "sid",
            "connect.sid",
            "PHPSESSID",
            "cc-csc",
            "x-csrf-token",
            "_csrf",
            "X-Amz-Signature",
            "AccountKey",
            "contraseña", // not a part: checked below as an extra exact name
        ] {
            if name == "contraseña" {
                assert!(!r.is_sensitive(name.as_bytes(), Encoding::Plain));
                let extra = NameRule::new(&["contraseña"], &[]);
                assert!(extra.is_sensitive("Contraseña".as_bytes(), Encoding::Plain));
                continue;
            }
            assert!(r.is_sensitive(name.as_bytes(), Encoding::Plain), "{name}");
        }
    }

    #[test]
    fn readable_names_stay_readable() {
        let r = rule();
        for name in [
            "token_type",
            "tokenType",
            "expires_in",
            "author",
            "passenger",
            "keyword",
            "monkey",
            "spinner",
            "authority",
            ":authority",
            "keys",
            "total_tokens",
            "access_token_type",
            "secretary_email",
            "accession_number",
            "possession",
            "access-control-allow-credentials",
            "content-type",
            "user",
            "",
            "--",
            "token_endpoint_auth_methods_supported",
        ] {
            assert!(!r.is_sensitive(name.as_bytes(), Encoding::Plain), "{name}");
        }
        // A harmless name blanked out does not hide a part left over.
        for name in ["possession_token", "token_type_secret", "secretary_password"] {
            assert!(r.is_sensitive(name.as_bytes(), Encoding::Plain), "{name}");
        }
    }

    #[test]
    fn percent_encoded_names() {
        let r = rule();
        assert!(r.is_sensitive(b"pass%77ord", Encoding::Percent));
        assert!(r.is_sensitive(b"user%5Bpassword%5D", Encoding::Percent));
        assert!(r.is_sensitive(b"new+password", Encoding::Percent));
        assert!(!r.is_sensitive(b"pass%77ord", Encoding::Plain), "no decoding where names are not encoded");
        assert!(!r.is_sensitive(b"%", Encoding::Percent));
        assert!(!r.is_sensitive(b"%4", Encoding::Percent));
    }

    #[test]
    fn exact_names_that_span_segments_match_the_whole_name() {
        let r = NameRule::new(&["user.data", "a[b]"], DEFAULT_HARMLESS_FIELDS);
        assert!(r.is_sensitive(b"user.data", Encoding::Plain));
        assert!(r.is_sensitive(b"User_Data", Encoding::Plain), "the whole name, normalised");
        assert!(r.is_sensitive(b"a[b]", Encoding::Plain));
        assert!(!r.is_sensitive(b"user", Encoding::Plain) && !r.is_sensitive(b"data", Encoding::Plain));
        assert!(!r.is_sensitive(b"x.user.data", Encoding::Plain));
    }

    #[test]
    fn exact_names_win_over_harmless_and_long_names_work() {
        let r = NameRule::new(&["token_type"], DEFAULT_HARMLESS_FIELDS);
        assert!(r.is_sensitive(b"TokenType", Encoding::Plain));
        let long = format!("{}_password", "x".repeat(300));
        assert!(rule().is_sensitive(long.as_bytes(), Encoding::Plain));
        let long = format!("{}_passenger", "x".repeat(300));
        assert!(!rule().is_sensitive(long.as_bytes(), Encoding::Plain));
        let long_exact = "y".repeat(200);
        let r = NameRule::new(&[long_exact.as_str()], &[]);
        assert!(r.is_sensitive(long_exact.to_uppercase().as_bytes(), Encoding::Plain));
        assert!(!r.is_sensitive(&long_exact.as_bytes()[1..], Encoding::Plain));
    }
}
