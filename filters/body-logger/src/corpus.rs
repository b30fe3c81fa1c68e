//! The redaction corpora and the property the fuzz target checks. Public so the unit tests,
//! the end-to-end test (a real Envoy) and the fuzz target run the same cases; the filter never
//! calls it (it is dropped from the module at link time).
//!
//! - [`leak_corpus`]: real-world shapes, each with planted secrets that must be absent from
//!   the log line and present in what the upstream (or the client) got.
//! - [`readable_corpus`]: bodies that must be logged exactly as they are.
//! - [`generate`] and [`check_generated`]: a structured input (a sensitive name from the listed
//!   set, in a random encoding shape, with a random secret, in random noise) and the property
//!   "the secret never appears in the redacted output".

use crate::config::{BodyKind, RedactConfig, DEFAULT_REDACT_FIELDS};
use crate::names::SENSITIVE_PARTS;
use crate::redact::Redactor;

/// One exchange through the filter: the request as the client sends it; the upstream echoes
/// the body back with `content-type` and the `response_headers` (the e2e upstream does this
/// when told by `x-echo-content-type` / `x-echo-header`).
#[derive(Clone, Debug)]
pub struct LeakCase {
    pub name: &'static str,
    /// Path and query, as sent.
    pub path: String,
    pub content_type: &'static str,
    /// `content-encoding` header values, one header each (both directions).
    pub content_encoding: Vec<&'static str>,
    /// The body is gzip-compressed before sending (by the test: the corpus stays plain).
    pub gzip: bool,
    pub body: Vec<u8>,
    pub request_headers: Vec<(&'static str, String)>,
    pub response_headers: Vec<(&'static str, String)>,
    /// Every one must be absent from the log line and present in what was sent.
    pub secrets: Vec<&'static str>,
}

impl LeakCase {
    fn new(name: &'static str, content_type: &'static str, body: &str, secrets: &[&'static str]) -> LeakCase {
        LeakCase {
            name,
            path: format!("/leak/{name}"),
            content_type,
            content_encoding: Vec::new(),
            gzip: false,
            body: body.as_bytes().to_vec(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            secrets: secrets.to_vec(),
        }
    }

    /// Whether the body must not be logged at all (encoded): then the check is that it is not.
    pub fn encoded(&self) -> bool {
        self.gzip || !self.content_encoding.is_empty()
    }

    /// The check on one log line (its JSON text): `Err` names the first leak.
    pub fn check_line(&self, line: &str) -> Result<(), String> {
        for s in &self.secrets {
            if line.contains(s) {
                return Err(format!("{}: {s} is in the log line: {line}", self.name));
            }
        }
        if self.encoded() {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", self.name))?;
            for dir in ["request", "response"] {
                if !v[dir]["body"].is_null() || v[dir]["skipped"] != "content_encoding" {
                    return Err(format!("{}: the encoded {dir} body was logged: {line}", self.name));
                }
            }
        }
        Ok(())
    }

    /// Everything the client sent, plain (before compression): each secret must be in it.
    pub fn sent_text(&self) -> String {
        let mut all = String::from_utf8_lossy(&self.body).into_owned();
        all.push_str(&self.path);
        for (_, v) in self.request_headers.iter().chain(&self.response_headers) {
            all.push_str(v);
        }
        all
    }
}

/// The leak corpus: every shape of the review (B1–B6) and more of the same families.
pub fn leak_corpus() -> Vec<LeakCase> {
    let mut cases = Vec::new();
    // B1: compressed bodies are never logged, whatever the content type says.
    let token_response = r#"{"access_token":"B1GZIPSECRET1","token_type":"Bearer","refresh_token":"B1GZIPSECRET2"}"#;
    let mut c = LeakCase::new("gzip", "application/json", token_response, &["B1GZIPSECRET1", "B1GZIPSECRET2"]);
    c.gzip = true;
    c.content_encoding = vec!["gzip"];
    cases.push(c);
    // Two content-encoding headers, the first `identity`.
    let mut c = LeakCase::new("gzip-second-header", "application/json", token_response, &["B1GZIPSECRET1"]);
    c.gzip = true;
    c.content_encoding = vec!["identity", "gzip"];
    cases.push(c);
    // The same with a coding whose bytes have no magic number to recognise.
    let mut c = LeakCase::new("br-second-header", "application/json", r#"{"note":"B1BR2SECRET"}"#, &["B1BR2SECRET"]);
    c.content_encoding = vec!["identity", "br"];
    cases.push(c);
    // A compressed body without a content-encoding header: the bytes say it.
    let mut c = LeakCase::new("gzip-unlabelled", "application/json", token_response, &["B1GZIPSECRET1"]);
    c.gzip = true;
    cases.push(c);
    // Any coding but identity, even one the filter cannot read the bytes of.
    let mut c = LeakCase::new("br-labelled", "application/json", r#"{"note":"B1BRSECRET"}"#, &["B1BRSECRET"]);
    c.content_encoding = vec!["br"];
    cases.push(c);

    // B2: names as people write them.
    cases.push(LeakCase::new(
        "json-names",
        "application/json",
        r#"{"accessToken":"B2SECRET01","refreshToken":"B2SECRET02","clientSecret":"B2SECRET03","idToken":"B2SECRET04","privateKey":"B2SECRET05","newPassword":"B2SECRET06","password_confirmation":"B2SECRET07","sessionToken":"B2SECRET08","user":"ann"}"#,
        &["B2SECRET01", "B2SECRET02", "B2SECRET03", "B2SECRET04", "B2SECRET05", "B2SECRET06", "B2SECRET07", "B2SECRET08"],
    ));
    cases.push(LeakCase::new(
        "env-text",
        "text/plain",
        "DB_PASSWORD=B2SECRET09\nGITHUB_TOKEN=B2SECRET10\nAWS_SECRET_ACCESS_KEY=B2SECRET11\n\
         spring.datasource.password: B2SECRET12\nrun --db-password=B2SECRET13 --verbose\n",
        &["B2SECRET09", "B2SECRET10", "B2SECRET11", "B2SECRET12", "B2SECRET13"],
    ));

    // B3: JSON inside JSON strings (an SNS envelope; GraphQL variables as a string; an SQS
    // message holding an SNS envelope holding JSON: two levels), form-encoded JSON (Slack's
    // `payload=`), escaped JSON in a text log line.
    cases.push(LeakCase::new(
        "sns-envelope",
        "application/json",
        r#"{"Type":"Notification","Message":"{\"password\":\"B3SECRET1\",\"user\":\"ann\"}","TopicArn":"arn:aws:sns:x"}"#,
        &["B3SECRET1"],
    ));
    cases.push(LeakCase::new(
        "graphql-variables-string",
        "application/json",
        r#"{"query":"mutation Change($p: String!) { change(newPassword: $p) }","variables":"{\"p\":\"x\",\"newPassword\":\"B3SECRET2\"}"}"#,
        &["B3SECRET2"],
    ));
    cases.push(LeakCase::new(
        "sqs-sns-two-levels",
        "application/json",
        r#"{"Records":[{"body":"{\"Type\":\"Notification\",\"Message\":\"{\\\"client_secret\\\":\\\"B3SECRET3\\\"}\"}"}]}"#,
        &["B3SECRET3"],
    ));
    cases.push(LeakCase::new(
        "form-payload-json",
        "application/x-www-form-urlencoded",
        "payload=%7B%22type%22%3A%22block_actions%22%2C%22token%22%3A%22B3SECRET4%22%7D&x=1",
        &["B3SECRET4"],
    ));
    cases.push(LeakCase::new(
        "text-escaped-json",
        "text/plain",
        r#"level=info msg="{\"apiKey\":\"B3SECRET5\",\"n\":1}""#,
        &["B3SECRET5"],
    ));

    // B4: XML (WS-Security, elements, attributes, escaped XML, CDATA), HTML, multipart.
    cases.push(LeakCase::new(
        "soap-ws-security",
        "text/xml; charset=utf-8",
        r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsse="http://docs.oasis-open.org/wss"><soap:Header><wsse:Security><wsse:UsernameToken><wsse:Username>ann</wsse:Username><wsse:Password Type="wsse#PasswordText">B4SECRET1</wsse:Password></wsse:UsernameToken></wsse:Security></soap:Header><soap:Body><Login><token>B4SECRET2</token><login user="ann" password="B4SECRET3"/></Login></soap:Body></soap:Envelope>"#,
        &["B4SECRET1", "B4SECRET2", "B4SECRET3"],
    ));
    cases.push(LeakCase::new(
        "xml-escaped-and-cdata",
        "application/xml",
        r#"<msg><payload>&lt;secret&gt;B4SECRET4&lt;/secret&gt;</payload><data><![CDATA[{"password":"B4SECRET5"}]]></data></msg>"#,
        &["B4SECRET4", "B4SECRET5"],
    ));
    cases.push(LeakCase::new(
        "html-hidden-inputs",
        "text/html",
        r#"<!DOCTYPE html><html><head><meta name="csrf-token" content="B4SECRET6"></head><body><form><input type="hidden" name="authenticity_token" value="B4SECRET7"><input type="password" name="pw" value="B4SECRET8"></form></body></html>"#,
        &["B4SECRET6", "B4SECRET7", "B4SECRET8"],
    ));
    cases.push(LeakCase::new(
        "multipart",
        "multipart/form-data; boundary=XyZzY",
        "--XyZzY\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n\
         --XyZzY\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nB4SECRET9\r\n\
         --XyZzY\r\nContent-Disposition: form-data; name=\"profile\"\r\nContent-Type: application/json\r\n\r\n{\"apiKey\":\"B4SECRET10\"}\r\n\
         --XyZzY--\r\n",
        &["B4SECRET9", "B4SECRET10"],
    ));

    // B5: card numbers in forms.
    cases.push(LeakCase::new(
        "form-cards",
        "application/x-www-form-urlencoded",
        "cc-number=4111+1111+1111+1111&cc-exp=12%2F30&cardnumber=4111%201111%201111%201111&note=5500+0000+0000+0004",
        &["4111+1111", "4111%201111", "5500+0000", "1111+1111+1111"],
    ));

    // B6: URLs in headers (query and fragment), `;` path parameters, header names.
    let mut c = LeakCase::new("headers-and-path", "application/json", r#"{"ok":true}"#, &[]);
    c.path = "/leak/cart;jsessionid=B6SECRET7/items;session_id=B6SECRET8?x=1;access_token=B6SECRET9&page=2".into();
    c.request_headers = vec![
        ("referer", "https://app.example/cb?x=1&access_token=B6SECRET1".into()),
        ("x-goog-api-key", "B6SECRET2".into()),
        ("api-key", "B6SECRET3".into()),
        ("x-vault-token", "B6SECRET4".into()),
        ("private-token", "B6SECRET5".into()),
    ];
    c.response_headers = vec![("location", "https://app.example/cb#access_token=B6SECRET6&token_type=bearer".into())];
    c.secrets = vec![
        "B6SECRET1",
        "B6SECRET2",
        "B6SECRET3",
        "B6SECRET4",
        "B6SECRET5",
        "B6SECRET6",
        "B6SECRET7",
        "B6SECRET8",
        "B6SECRET9",
    ];
    cases.push(c);
    // More URLs in bodies: a query value with a comma, a nested percent-encoded URL, user-info.
    cases.push(LeakCase::new(
        "urls-in-json",
        "application/json",
        r#"{"next":"https://app.example/cb?token=B6SECRET10,more","redirect":"https://a.example/?to=https%3A%2F%2Fb.example%2Fcb%3Faccess_token%3DB6SECRET11","db":"postgres://app:B6SECRET12@db.internal:5432/app"}"#,
        &["B6SECRET10", "B6SECRET11", "B6SECRET12"],
    ));
    cases
}

/// A body that must be logged as it is, with no redaction.
#[derive(Clone, Debug)]
pub struct ReadableCase {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub fn readable_corpus() -> Vec<ReadableCase> {
    vec![
        ReadableCase {
            name: "json",
            content_type: "application/json",
            body: r#"{"token_type":"Bearer","expires_in":3600,"scope":"openid profile","author":"Ann","passenger":"Bob","keyword":"rust","monkey":"George","count":42,"price":19.99,"note":"The quick brown fox.","usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19},"secretary":"Eve","possession":0.61}"#,
        },
        ReadableCase {
            name: "oidc-discovery",
            content_type: "application/json",
            body: r#"{"issuer":"https://id.example","authorization_endpoint":"https://id.example/auth","token_endpoint":"https://id.example/token","token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt"],"id_token_signing_alg_values_supported":["RS256"],"end_session_endpoint":"https://id.example/logout"}"#,
        },
        ReadableCase {
            name: "form",
            content_type: "application/x-www-form-urlencoded",
            body: "author=Ann&passenger=Bob&keyword=rust&monkey=George&count=42&q=hello+world&page=2",
        },
        ReadableCase {
            name: "text",
            content_type: "text/plain",
            body: "author: Ann\npassenger: Bob\nkeyword = rust\nmonkey=George\n\
                   42 items at 12:30, order 1234567890123, call +1 415 555 0100.\n\
                   Your session expired. Reset your password from the account page.\n\
                   see https://example.com/search?q=rust&page=2#results\n",
        },
        ReadableCase {
            name: "xml",
            content_type: "application/xml",
            body: r#"<book lang="en"><author>Ann</author><passenger>Bob</passenger><keyword>rust</keyword><monkey name="George"/><count>42</count><note>Fish &amp; chips</note></book>"#,
        },
        ReadableCase {
            name: "html",
            content_type: "text/html",
            body: r#"<form><input type="text" name="author" value="Ann"><input name="keyword" value="rust"><p>5 &lt; 6</p></form>"#,
        },
        ReadableCase {
            name: "multipart",
            content_type: "multipart/form-data; boundary=b0",
            body: "--b0\r\nContent-Disposition: form-data; name=\"author\"\r\n\r\nAnn\r\n--b0\r\nContent-Disposition: form-data; name=\"keyword\"\r\n\r\nrust\r\n--b0--\r\n",
        },
    ]
}

impl ReadableCase {
    /// The check on the logged body: exactly the input.
    pub fn check_logged(&self, logged: &str) -> Result<(), String> {
        if logged != self.body {
            return Err(format!("{}: changed:\n  sent   {}\n  logged {logged}", self.name, self.body));
        }
        Ok(())
    }
}

// ---- the fuzz property: a secret under a sensitive name never appears ----

/// A generated input: where the secret sits and how the redactor is to read it.
#[derive(Clone, Debug)]
pub struct Generated {
    pub shape: &'static str,
    pub target: Target,
    pub input: Vec<u8>,
    pub secret: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Body(BodyKind),
    Path,
    HeaderValue,
}

/// Bytes read from the fuzzer's input; zeros once it runs out (any input is a valid case).
pub struct Source<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Source<'a> {
    pub fn new(data: &'a [u8]) -> Source<'a> {
        Source { data, at: 0 }
    }
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (usize::from(self.byte()) << 8 | usize::from(self.byte())) % n
        }
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len())).copied()
    }
}

/// Decorations that keep a part a part (never make a harmless name: no `_type`, `_in`…).
const PREFIXES: &[&str] = &["", "new_", "x-", "db_", "client", "user.", "My", "aws-"];
const SUFFIXES: &[&str] = &["", "_confirmation", "2", "Value", "-old", "_hash"];
/// Names in the noise: readable, not sensitive.
const NOISE_NAMES: &[&str] = &["user", "author", "keyword", "count", "page", "note", "monkey", "passenger", "id"];
const NOISE_WORDS: &[&str] = &["hello", "world", "ann", "42", "3.5", "rust", "ok", "the", "quick", "fox", "x"];

/// A sensitive name from the listed set: a part with random case and decoration, or an exact
/// default name as a whole.
fn sensitive_name(src: &mut Source) -> String {
    let base = if src.below(4) == 0 {
        src.pick(DEFAULT_REDACT_FIELDS).unwrap_or("pin").to_string()
    } else {
        let part = src.pick(SENSITIVE_PARTS).unwrap_or("password");
        format!("{}{part}{}", src.pick(PREFIXES).unwrap_or(""), src.pick(SUFFIXES).unwrap_or(""))
    };
    // Random case; `_` and `-` swapped at random.
    base.bytes()
        .map(|b| {
            let r = src.byte();
            let b = if r & 1 == 1 { b.to_ascii_uppercase() } else { b };
            match (b, r & 6) {
                (b'_', 2) => '-',
                (b'-', 2) => '_',
                (b, _) => char::from(b),
            }
        })
        .collect()
}

fn secret(src: &mut Source) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789abcdefghjkmnpqrstuvwxyz-._";
    let n = 10 + src.below(14);
    let body: String = (0..n).map(|_| char::from(ALPHABET[src.below(ALPHABET.len())])).collect();
    // A fixed start keeps the secret from being mistaken for noise (or a card number).
    format!("Zq{body}")
}

fn noise_words(src: &mut Source, max: usize) -> String {
    let n = src.below(max + 1);
    let words: Vec<&str> = (0..n).map(|_| src.pick(NOISE_WORDS).unwrap_or("x")).collect();
    words.join(" ")
}

fn json_noise(src: &mut Source) -> String {
    let n = src.below(4);
    (0..n)
        .map(|_| {
            let name = src.pick(NOISE_NAMES).unwrap_or("n");
            match src.below(3) {
                0 => format!("\"{name}\":\"{}\",", noise_words(src, 4)),
                1 => format!("\"{name}\":{},", src.below(100_000)),
                _ => format!("\"{name}\":[{},\"{}\"],", src.below(10), noise_words(src, 2)),
            }
        })
        .collect()
}

fn form_noise(src: &mut Source) -> String {
    let n = src.below(4);
    (0..n).map(|_| format!("{}={}&", src.pick(NOISE_NAMES).unwrap_or("n"), src.below(1000))).collect()
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Every byte but the unreserved ones (RFC 3986), as `encodeURIComponent` does.
fn percent_encode_all(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A name that is also an XML name (no `[`, `/`, leading digit).
fn xml_name(name: &str) -> String {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')).collect();
    if n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        n
    } else {
        format!("_{n}")
    }
}

/// A structured case from the fuzzer's bytes.
pub fn generate(data: &[u8]) -> Generated {
    let mut src = Source::new(data);
    let name = sensitive_name(&mut src);
    let secret = secret(&mut src);
    let pre = noise_words(&mut src, 5);
    let post = noise_words(&mut src, 5);
    let (shape, target, input): (&'static str, Target, String) = match src.below(18) {
        0 => {
            let ws = [" ", "", "\n  "][src.below(3)];
            let j = format!(
                "{{{}\"{}\"{ws}:{ws}\"{secret}\",{}\"z\":1}}",
                json_noise(&mut src),
                json_escape(&name),
                json_noise(&mut src)
            );
            ("json key", Target::Body(BodyKind::Json), j)
        }
        1 => {
            let inner = format!("{{{}\"{}\":\"{secret}\"}}", json_noise(&mut src), json_escape(&name));
            let mut s = inner;
            for _ in 0..=src.below(3) {
                s = format!("{{\"Message\":\"{}\",{}\"z\":0}}", json_escape(&s), json_noise(&mut src));
            }
            ("json in json strings", Target::Body(BodyKind::Json), s)
        }
        2 => {
            // Some bytes of the name percent-encoded.
            let encoded: String = name
                .bytes()
                .map(|b| if src.below(3) == 0 { format!("%{b:02x}") } else { char::from(b).to_string() })
                .collect();
            let f = format!("{}{encoded}={secret}&{}", form_noise(&mut src), form_noise(&mut src));
            ("form field", Target::Body(BodyKind::Form), f)
        }
        3 => {
            let sep = [": ", "=", " = ", ":\t"][src.below(4)];
            ("text pair", Target::Body(BodyKind::Text), format!("{pre}\n{name}{sep}{secret}\n{post}"))
        }
        4 => {
            let q = ["\"", "'"][src.below(2)];
            ("text quoted pair", Target::Body(BodyKind::Text), format!("{pre} {q}{name}{q}: {q}{secret}{q}, {post}"))
        }
        5 => {
            let n = xml_name(&name);
            let prefix = ["", "wsse:", "ns1:"][src.below(3)];
            let x = format!("<r><a>{pre}</a><{prefix}{n} t=\"1\">{secret}</{prefix}{n}><b>{post}</b></r>");
            ("xml element", Target::Body(BodyKind::Xml), x)
        }
        6 => {
            let n = xml_name(&name);
            ("xml attribute", Target::Body(BodyKind::Xml), format!("<r a=\"{pre}\"><e {n}=\"{secret}\" b='x'/></r>"))
        }
        7 => {
            let n = xml_name(&name);
            let x = format!("<r><p>&lt;{n}&gt;{secret}&lt;/{n}&gt;</p><q>{post}</q></r>");
            ("xml escaped in text", Target::Body(BodyKind::Xml), x)
        }
        8 => {
            let m = format!(
                "--bNd\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{pre}\r\n--bNd\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{secret}\r\n--bNd--\r\n"
            );
            ("multipart part", Target::Body(BodyKind::Multipart), m)
        }
        9 => {
            let j = format!(
                "{{\"next\":\"https://x.example/cb?a=1&{name}={secret}&b=2\",{}\"z\":1}}",
                json_noise(&mut src)
            );
            ("url query in json", Target::Body(BodyKind::Json), j)
        }
        10 => (
            "url fragment in text",
            Target::Body(BodyKind::Text),
            format!("{pre} https://x.example/cb#{name}={secret}&s=1 {post}"),
        ),
        11 => ("path parameter", Target::Path, format!("/a;{name}={secret}/b?page=2")),
        12 => ("query parameter", Target::Path, format!("/a?x=1;{name}={secret}&page=2")),
        13 => ("header value url", Target::HeaderValue, format!("https://app.example/cb?x=1&{name}={secret}")),
        14 => {
            let inner = format!("{{\"{}\":\"{secret}\"}}", json_escape(&name));
            let f = format!("{}payload={}&{}", form_noise(&mut src), percent_encode_all(&inner), form_noise(&mut src));
            ("percent-encoded json in a form", Target::Body(BodyKind::Form), f)
        }
        15 => (
            "url user-info",
            Target::Body(BodyKind::Text),
            format!("{pre} postgres://app:{secret}@db.internal:5432/x {post}"),
        ),
        16 => {
            let h = format!("<form><input name=\"{name}\" type=\"hidden\" value=\"{secret}\"><p>{pre}</p></form>");
            ("html input", Target::Body(BodyKind::Xml), h)
        }
        _ => {
            let j = format!("{pre} {{\"{}\": \"{secret}\"}} {post}", json_escape(&name));
            ("json in text", Target::Body(BodyKind::Text), j)
        }
    };
    Generated { shape, target, input: input.into_bytes(), secret }
}

/// Run a generated case through the default redactor; `Err` says how the property failed.
pub fn check_generated(redactor: &Redactor, case: &Generated, cut: Option<usize>) -> Result<(), String> {
    let secret = case.secret.as_bytes();
    let Some(at) = case.input.windows(secret.len()).position(|w| w == secret) else {
        return Err(format!("generator bug: the secret is not in the input ({case:?})"));
    };
    // The capture may end anywhere after the secret.
    let end = cut.map_or(case.input.len(), |c| (at + secret.len() + c).min(case.input.len()));
    let input = &case.input[..end];
    let (out, count) = match case.target {
        Target::Body(kind) => {
            let boundary: &[u8] = b"bNd";
            redactor.redact_body(input, kind, (kind == BodyKind::Multipart).then_some(boundary), end < case.input.len())
        }
        Target::Path => redactor.redact_path(input),
        Target::HeaderValue => redactor.redact_value(input),
    };
    if out.contains(&case.secret) {
        return Err(format!(
            "{}: the secret is in the output\n  input  {}\n  output {out}",
            case.shape,
            String::from_utf8_lossy(input)
        ));
    }
    if count == 0 {
        return Err(format!("{}: nothing counted for {out}", case.shape));
    }
    Ok(())
}

/// The property for one fuzzer input: whole and cut after the secret.
pub fn property(data: &[u8]) -> Result<(), String> {
    let redactor = default_redactor()?;
    let case = generate(data);
    check_generated(&redactor, &case, None)?;
    let cut = data.last().map(|b| usize::from(*b) % 16);
    check_generated(&redactor, &case, cut)
}

pub fn default_redactor() -> Result<Redactor, String> {
    RedactConfig::default().compile().map_err(|e| e.to_string())
}
