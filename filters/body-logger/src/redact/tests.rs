//! The redactor's own cases; the corpora of real-world shapes are in `crate::corpus`.

use super::*;
use crate::config::{RedactConfig, DEFAULT_REPLACEMENT};

fn r() -> Redactor {
    RedactConfig::default().compile().unwrap()
}

fn body(kind: BodyKind, input: &str) -> String {
    r().redact_body(input.as_bytes(), kind, None, false).0
}

const R: &str = DEFAULT_REPLACEMENT;

#[test]
fn json_keys_at_any_depth_case_insensitive() {
    let input = r#"{"user":"ann","Password":"hunter2","nested":{"deeper":[{"ACCESS_TOKEN":"tok-123","n":1}]},"api_key":12345,"client_secret":{"a":"b"},"ok":"visible"}"#;
    let out = body(BodyKind::Json, input);
    for secret in ["hunter2", "tok-123", "12345", "\"a\":\"b\""] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(out.contains(r#""user":"ann""#) && out.contains(r#""ok":"visible""#) && out.contains(r#""n":1"#), "{out}");
    assert_eq!(r().redact_body(input.as_bytes(), BodyKind::Json, None, false).1, 4);
    // Still JSON when the input was.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Password"], R);
}

#[test]
fn json_escaped_keys_and_strings() {
    let out = body(BodyKind::Json, r#"{"pass\u0077ord":"s1", "note":"a \"pin\" x", "token" : "s\"2"}"#);
    assert!(!out.contains("s1") && !out.contains("s\\\"2"), "{out}");
    assert!(out.contains(r#""note":"a \"pin\" x""#), "string content is not a key: {out}");
    // But `name: value` inside a string value is redacted by the text pass.
    let (out, n) = r().redact_body(br#"{"msg":"login password: hunter2","password":"x"}"#, BodyKind::Json, None, false);
    assert!(!out.contains("hunter2"), "{out}");
    assert_eq!(n, 2, "the JSON value is not counted twice: {out}");
}

#[test]
fn json_value_cut_by_the_capture_is_redacted_to_the_end() {
    for cut in [
        r#"{"a":1,"password":"hunter2-and-mo"#,
        r#"{"a":1,"secret":{"k":"hunter2"#,
        r#"{"a":1,"token":["hunter2","#,
        r#"{"a":1,"pin":12345"#,
    ] {
        let out = r().redact_body(cut.as_bytes(), BodyKind::Json, None, true).0;
        assert!(!out.contains("hunter2") && !out.contains("12345"), "{out}");
        assert!(out.ends_with(&format!("\"{R}\"")), "{out}");
    }
    // Cut inside the key or before the value: nothing to leak, nothing broken.
    for cut in [r#"{"a":1,"passw"#, r#"{"password""#, r#"{"password": "#] {
        let _ = r().redact_body(cut.as_bytes(), BodyKind::Json, None, true);
    }
}

#[test]
fn invalid_json_still_redacted() {
    let input: &[u8] = b"not json {'x' \"password\": hunter2, Bearer abc.def} \xff";
    let out = r().redact_body(input, BodyKind::Json, None, false).0;
    assert!(!out.contains("hunter2") && !out.contains("abc.def"), "{out}");
}

#[test]
fn forms() {
    let out = body(BodyKind::Form, "user=ann&password=hunter2&pass%77ord=s2&user%5Bpassword%5D=s3&x=1&Token=t4");
    for s in ["hunter2", "s2", "s3", "t4"] {
        assert!(!out.contains(s), "{s}: {out}");
    }
    assert!(out.starts_with("user=ann&password=") && out.contains("&x=1&"), "{out}");
    let cut = r().redact_body(b"a=1&password=hunt", BodyKind::Form, None, true).0;
    assert_eq!(cut, format!("a=1&password={R}"));
}

#[test]
fn text_pairs_and_patterns() {
    let input = "login password: hunter2\nsecret=s2; Authorization: Bearer abc.DEF-123\n\
                 jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl and 'token': 'quoted s3'\n\
                 the token expired, card 4111 1111 1111 1111, order 1234567890123";
    let out = body(BodyKind::Text, input);
    for s in ["hunter2", "s2", "abc.DEF-123", "eyJzdWIiOiIxIn0", "quoted s3", "4111"] {
        assert!(!out.contains(s), "{s}: {out}");
    }
    assert!(out.contains("the token expired"), "{out}");
    assert!(out.contains("Authorization: [REDACTED]\n"), "{out}");
    assert_eq!(body(BodyKind::Text, "x Bearer abc"), "x Bearer [REDACTED]");
    assert!(out.contains("order 1234567890123"), "not Luhn-valid, kept: {out}");
}

#[test]
fn cards_luhn_and_cut() {
    let out = body(BodyKind::Json, r#"{"c":"4111-1111-1111-1111","d":"5500 0000 0000 0004","id":"x4111111111111111"}"#);
    assert!(!out.contains("4111-1111") && !out.contains("5500"), "{out}");
    assert!(out.contains("x4111111111111111"), "inside a word: kept: {out}");
    let cut = r().redact_body(b"{\"note\":\"4111 1111 11", BodyKind::Json, None, true).0;
    assert!(!cut.contains("4111"), "{cut}");
    let not_cut = r().redact_body(b"{\"n\":\"4111 1111 11\"}", BodyKind::Json, None, false).0;
    assert!(not_cut.contains("4111 1111 11"), "{not_cut}");
}

#[test]
fn prefilter_finds_needles_anywhere() {
    assert!(contains_ignore_ascii_case(b"x BeArEr y", b"bearer"));
    assert!(contains_ignore_ascii_case(b"bearer", b"bearer"));
    assert!(!contains_ignore_ascii_case(b"beare", b"bearer"));
    assert!(!contains_ignore_ascii_case(b"", b"eyj"));
    // The JWT pattern still fires through the prefilter (eyJ is matched case-insensitively).
    assert_eq!(body(BodyKind::Text, "t eyJhbGciOi.eyJzdWIiOi.c2ln"), format!("t {R}"));
}

#[test]
fn invalid_utf8_is_escaped_never_a_panic() {
    assert_eq!(escape_invalid_utf8(b"a\xffb\xc3"), "a\\xffb\\xc3");
    assert_eq!(escape_invalid_utf8("é".as_bytes()), "é");
    let red = r();
    // Every prefix of a nasty input, every kind: no panic.
    let nasty: &[u8] = b"{\"password\":\"\xff\xfe\\\"x\\u12\",\"a\":[{\"token\":\"\xc3\x28\"}]}&password=%zz%4&\"";
    for n in 0..=nasty.len() {
        for kind in [BodyKind::Json, BodyKind::Form, BodyKind::Text] {
            let (out, _) = red.redact_body(&nasty[..n], kind, None, true);
            assert!(!out.contains('\u{fffd}'));
        }
    }
}

#[test]
fn paths_and_header_values() {
    let red = r();
    let (p, n) = red.redact_path(b"/cb?code=1&access_token=abc&state=x");
    assert_eq!(p, format!("/cb?code=1&access_token={R}&state=x"));
    assert_eq!(n, 1);
    assert!(red.is_sensitive_header("Authorization") && red.is_sensitive_header("set-cookie"));
    assert!(!red.is_sensitive_header("content-type"));
    let (v, _) = red.redact_value(b"Bearer xyz");
    assert_eq!(v, format!("Bearer {R}"));
}

#[test]
fn custom_patterns_whole_match_or_value_group() {
    let cfg: RedactConfig = serde_json::from_str(
        r#"{"patterns":[{"name":"ssn","regex":"\\b\\d{3}-\\d{2}-\\d{4}\\b"},{"name":"key","regex":"key-(?P<value>[a-z]+)"}],"replacement":"***"}"#,
    )
    .unwrap();
    let red = cfg.compile().unwrap();
    let (out, n) = red.redact_body(b"ssn 123-45-6789 key-abc", BodyKind::Text, None, false);
    assert_eq!(out, "ssn *** key-***");
    assert_eq!(n, 2);
    assert!(Pattern::compile("e", "a*").is_err(), "matches empty");
}

// ---- issue 14: real-world shapes (each failed before; the corpora in `crate::corpus` run
// them through the filter too) ----

fn redacts(kind: BodyKind, input: &str, secrets: &[&str]) -> String {
    let (out, n) = r().redact_body(input.as_bytes(), kind, None, false);
    for s in secrets {
        assert!(!out.contains(s), "{s} leaked: {out}");
    }
    assert!(n as usize >= secrets.len().min(1), "{out}");
    out
}

#[test]
fn names_as_people_write_them() {
    // B2: camelCase and snake/kebab variants of the parts, JSON and text alike.
    let out = redacts(
        BodyKind::Json,
        r#"{"newPassword":"s1","password_confirmation":"s2","sessionToken":"s3","token_type":"Bearer","expires_in":60}"#,
        &["s1", "s2", "s3"],
    );
    assert!(out.contains(r#""token_type":"Bearer","expires_in":60"#), "{out}");
    redacts(BodyKind::Text, "DB_PASSWORD=s4\nexport GITHUB_TOKEN=s5\nAWS_SECRET_ACCESS_KEY: s6", &["s4", "s5", "s6"]);
}

#[test]
fn json_inside_json_strings_at_depth_and_past_the_cap() {
    // B3: one level, and several (each level escapes the one inside).
    let mut doc = r#"{"password":"DEEPSECRET","n":1}"#.to_string();
    for level in 1..=MAX_NESTING + 3 {
        doc = format!(r#"{{"Message":"{}","level":{level}}}"#, doc.replace('\\', "\\\\").replace('"', "\\\""));
        let (out, n) = r().redact_body(doc.as_bytes(), BodyKind::Json, None, false);
        assert!(!out.contains("DEEPSECRET"), "level {level}: {out}");
        assert!(n >= 1);
        if level > MAX_NESTING {
            // Past the cap the innermost string is replaced whole (fail closed), still a string.
            assert!(out.contains(R), "{out}");
        }
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "still JSON at level {level}: {out}");
    }
    // Unchanged strings keep their escapes byte for byte.
    let s = r#"{"note":"line\nnext \u00e9 \"q\"","n":"{\"a\":1}"}"#;
    assert_eq!(body(BodyKind::Json, s), s);
}

#[test]
fn xml_elements_attributes_entities_and_no_expansion() {
    // B4.
    redacts(
        BodyKind::Xml,
        r#"<e><wsse:Password Type="t">x1</wsse:Password><token>x2<b>x3</b></token><a secret='x4' n="1"/><p>&lt;apiKey&gt;x5&lt;/apiKey&gt;</p></e>"#,
        &["x1", "x2", "x3", "x4", "x5"],
    );
    // A DTD is never read: entities are not expanded (no billion laughs), output ≈ input.
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l0 "lol"><!ENTITY l1 "&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;">]><l>&l1;&l1;</l>"#;
    let out = body(BodyKind::Xml, laughs);
    assert_eq!(out, laughs);
    // A sensitive element cut by the capture: redacted to the end.
    let (out, _) = r().redact_body(b"<a><password>hunter2-and-more", BodyKind::Xml, None, true);
    assert_eq!(out, format!("<a><password>{R}"));
    // Nested same-name elements find their own end.
    let out = body(BodyKind::Xml, "<token><token>a</token>b</token><x>keep</x>");
    assert_eq!(out, format!("<token>{R}</token><x>keep</x>"));
}

#[test]
fn multipart_parts_by_name_and_by_type() {
    // B4: the boundary from the content-type, or the first line when it is missing.
    let body = "--b\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nx1\r\n--b\r\n\
                Content-Disposition: form-data; name*=UTF-8''api%5Fkey\r\n\r\nx2\r\n--b\r\n\
                Content-Disposition: form-data; name=\"f\"; filename=\"a.json\"\r\nContent-Type: application/json\r\n\r\n\
                {\"token\":\"x3\"}\r\n--b\r\nContent-Disposition: form-data; name=\"keep\"\r\n\r\nvisible\r\n--b--\r\n";
    for boundary in [Some(&b"b"[..]), None] {
        let (out, n) = r().redact_body(body.as_bytes(), BodyKind::Multipart, boundary, false);
        for s in ["x1", "x2", "x3"] {
            assert!(!out.contains(s), "{s}: {out}");
        }
        assert!(out.contains("\r\n\r\nvisible\r\n--b--"), "{out}");
        assert_eq!(n, 3);
    }
    // Cut inside a sensitive part.
    let (out, _) = r().redact_body(
        b"--b\r\nContent-Disposition: form-data; name=pin\r\n\r\n12",
        BodyKind::Multipart,
        Some(b"b"),
        true,
    );
    assert!(out.ends_with(R) && !out.contains("12"), "{out}");
}

#[test]
fn card_numbers_with_form_separators() {
    // B5.
    let out = redacts(
        BodyKind::Form,
        "cc-number=4111+1111+1111+1111&x=4111%201111%201111%201111&y=5500+0000+0000+0004",
        &["4111", "5500"],
    );
    assert_eq!(out, format!("cc-number={R}&x={R}&y={R}"));
}

#[test]
fn urls_path_parameters_and_header_values() {
    // B6.
    let red = r();
    let (p, n) = red.redact_path(b"/cart;jsessionid=s1/items;session_id=s2?x=1;access_token=s3&page=2#frag");
    assert_eq!(p, format!("/cart;jsessionid={R}/items;session_id={R}?x=1;access_token={R}&page=2#frag"));
    assert_eq!(n, 3);
    let (v, _) = red.redact_value(b"https://app.example/cb#access_token=s4&token_type=bearer");
    assert_eq!(v, format!("https://app.example/cb#access_token={R}&token_type=bearer"));
    let (p, _) = red.redact_path(b"/cb?token=s10;tail&x=1");
    assert_eq!(p, format!("/cb?token={R}&x=1"), "a `;` does not end a secret's value");
    let (v, _) = red.redact_value(b"https://app.example/?a=1&access_token=s5,more");
    assert_eq!(v, format!("https://app.example/?a=1&access_token={R}"), "a query value runs to `&`, not `,`");
    for h in ["x-goog-api-key", "api-key", "x-vault-token", "private-token", "X-Api-Key", "x_api_key"] {
        assert!(red.is_sensitive_header(h), "{h}");
    }
    for h in ["content-type", "access-control-allow-credentials", "authority", "sec-websocket-key"] {
        assert!(!red.is_sensitive_header(h), "{h}");
    }
    // User-info in any URL, percent-encoded URLs inside values.
    redacts(BodyKind::Text, "db postgres://app:s6@db:5432/x and amqp://u:s7@mq", &["s6", "s7"]);
    redacts(BodyKind::Text, "next=https%3A%2F%2Fa%2F%3Faccess_token%3Ds8%26x%3D1 done", &["s8"]);
    redacts(BodyKind::Text, "Authorization%3A%20Bearer%20s9x", &["s9x"]);
    // User-info cut by the end of the capture before its `@` (found by the property test).
    let (out, _) = red.redact_body(b"dsn postgres://app:hunter2", BodyKind::Text, None, true);
    assert_eq!(out, format!("dsn postgres://app:{R}"));
    let (out, _) = red.redact_body(b"see http://host:8080", BodyKind::Text, None, true);
    assert_eq!(out, "see http://host:8080", "a port is not a password");
}

#[test]
fn a_second_pass_does_not_redact_twice() {
    // The text pass after a layer sees `[REDACTED]` with other value ends: not counted again.
    let (out, n) = r().redact_path(b"/a;token=s1/b");
    assert_eq!((out.as_str(), n), ("/a;token=[REDACTED]/b", 1));
    let (_, n) = r().redact_body(br#"{"password":"x","url":"https://h/?token=y,z"}"#, BodyKind::Json, None, false);
    assert_eq!(n, 2);
}

#[test]
fn adversarial_shapes_stay_bounded() {
    // No recursion: deep nesting of every layer kind is a loop, not a stack.
    let deep_json = "[".repeat(100_000) + r#"{"password":"s"}"#;
    assert!(!body(BodyKind::Json, &deep_json).contains("\"s\""));
    let deep_xml = "<a>".repeat(50_000) + "<password>s</password>";
    assert!(!body(BodyKind::Xml, &deep_xml).contains(">s<"));
    let mut quoted = String::from("x");
    for _ in 0..12 {
        quoted = format!("\"{}\"", quoted.replace('\\', "\\\\").replace('"', "\\\""));
    }
    let _ = body(BodyKind::Json, &quoted.repeat(100));
    // Many small children.
    let many = r#"{"a":"\n"}"#.repeat(5_000);
    assert_eq!(body(BodyKind::Json, &many), many);
    let pct = "v=%3D&".repeat(5_000);
    assert_eq!(body(BodyKind::Form, &pct), pct);
    // Every prefix of a mixed input, every kind: no panic.
    let nasty = "<a b=\"&lt;\">--x\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{\"k\":\"\\\"password\\\":\\\"v\\\"\"} a%3D;b=c?x=1#y=2 ://u:p@h <![CDATA[";
    for n in 0..=nasty.len() {
        for kind in [BodyKind::Json, BodyKind::Form, BodyKind::Text, BodyKind::Xml, BodyKind::Multipart] {
            let _ = r().redact_body(&nasty.as_bytes()[..n], kind, Some(b"x"), true);
        }
        let _ = r().redact_path(&nasty.as_bytes()[..n]);
    }
}

/// The fuzz target's property (`crate::corpus::property`) over generated inputs: a fixed
/// seed, so a failure reproduces.
#[test]
fn generated_secrets_never_appear() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut shapes = std::collections::BTreeSet::new();
    let red = crate::corpus::default_redactor().unwrap();
    for n in 0..6_000 {
        let data: Vec<u8> = (0..160)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let case = crate::corpus::generate(&data);
        shapes.insert(case.shape);
        for cut in [None, Some(n % 7)] {
            if let Err(e) = crate::corpus::check_generated(&red, &case, cut) {
                panic!("input {n} (cut {cut:?}): {e}");
            }
        }
    }
    assert_eq!(shapes.len(), 18, "every shape generated: {shapes:?}");
    assert!(crate::corpus::property(&[]).is_ok(), "an empty input is a case too");
}

/// The control: the property fails on an unredacted body, so it can fail.
#[test]
fn the_property_fails_without_redaction() {
    let nothing = crate::config::RedactConfig {
        fields: vec!["unused".into()],
        bearer_tokens: false,
        jwts: false,
        card_numbers: false,
        ..crate::config::RedactConfig::default()
    };
    let red = nothing.compile().unwrap();
    // Parts are the floor: only a name that holds none gets through.
    let case = crate::corpus::Generated {
        shape: "control",
        target: crate::corpus::Target::Body(BodyKind::Json),
        input: br#"{"unrelated":"Zqsecret123"}"#.to_vec(),
        secret: "Zqsecret123".into(),
    };
    assert!(crate::corpus::check_generated(&red, &case, None).is_err());
}

#[test]
fn redacted_json_stays_json() {
    // A URL in a JSON string: the value ends inside the string, its closing quote kept (the
    // text pass used to run to the `,` after it, eating the quote).
    for input in [
        r#"{"url":"https://h/cb?token=abc","n":1}"#,
        r#"{"u":"https://h/cb?a=1&access_token=abc#x","m":"password=abc","k":"a \"token\": \"abc\""}"#,
        r#"{"Message":"{\"password\":\"abc\",\"x\":\"y\"}"}"#,
    ] {
        let out = body(BodyKind::Json, input);
        assert!(!out.contains("abc"), "{out}");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{input} -> {out}");
    }
}

#[test]
fn nested_layers_never_multiply_the_output() {
    // Layers whose encoders escape what the others emit (`'` → `&apos;` → `%26apos%3B`), built
    // inside out with a secret in every layer so that each is encoded back: the output stays
    // within a constant factor of the input (a fuzz target property too).
    let mut s = String::from("<a>''''''''''''''''</a><password>x</password>");
    for level in 0..MAX_NESTING {
        s = match level % 3 {
            0 => format!(
                "v=1&token=x&d={}",
                s.replace('%', "%25")
                    .replace('&', "%26")
                    .replace('<', "%3C")
                    .replace('>', "%3E")
                    .replace(';', "%3B")
                    .replace('=', "%3D")
            ),
            1 => format!("{{\"token\":\"x\",\"d\":\"{}\"}}", s.replace('\\', "\\\\").replace('"', "\\\"")),
            _ => format!(
                "<r><token>x</token><d>{}</d></r>",
                s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
            ),
        };
    }
    for kind in [BodyKind::Form, BodyKind::Json, BodyKind::Xml, BodyKind::Text] {
        let (out, n) = r().redact_body(s.as_bytes(), kind, None, false);
        assert!(out.len() <= 8 * s.len() + n as usize * (R.len() + 2) * 4 + 64, "{} -> {}", s.len(), out.len());
    }
}

/// Found while writing the fuzz target's "JSON stays JSON" property: a card number as a bare
/// JSON number under a harmless name became `{"a":[REDACTED]}`, which is not JSON. Outside a
/// string it is now quoted; inside a string (and in other layouts) it stays as it was.
#[test]
fn a_card_as_a_bare_json_number_stays_json() {
    for (input, want) in [
        (r#"{"a":4111111111111111}"#, format!(r#"{{"a":"{R}"}}"#)),
        (r#"[4111111111111111, 1]"#, format!(r#"["{R}", 1]"#)),
        (r#"{"s":"x\" 4111111111111111","n":4111111111111111}"#, format!(r#"{{"s":"x\" {R}","n":"{R}"}}"#)),
        (r#"{"s":"x\\","n":4111111111111111}"#, format!(r#"{{"s":"x\\","n":"{R}"}}"#)),
        (r#"{"s":"card 4111 1111 1111 1111 ok"}"#, format!(r#"{{"s":"card {R} ok"}}"#)),
    ] {
        let out = body(BodyKind::Json, input);
        assert_eq!(out, want, "{input}");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{input} -> {out}");
    }
    assert_eq!(body(BodyKind::Form, "n=4111111111111111"), format!("n={R}"));
}

/// Found by the fuzz target (`{"tota?l_tokens":30}` became `{"tota?l_tokens":[REDACTED]}`):
/// the text pass judged only the name bytes before a key's closing quote (`l_tokens`), so a
/// key the JSON layer had judged harmless as a whole got its value replaced bare, and the
/// line was no longer JSON. A quoted name is now judged whole, in every layout.
#[test]
fn a_quoted_name_is_judged_whole_by_the_text_pass() {
    for input in [r#"{"tota?l_tokens":30}"#, r#"{"total tokens": 30, "n": 1}"#, r#"{"m":"{\"total tokens\": 30}"}"#] {
        let out = body(BodyKind::Json, input);
        assert_eq!(out, input, "a harmless key stays readable");
    }
    // Whole quoted names that are sensitive are still redacted, quoted or not, in JSON and text.
    assert_eq!(body(BodyKind::Json, r#"{"my password": 1234}"#), format!(r#"{{"my password": "{R}"}}"#));
    assert_eq!(body(BodyKind::Text, r#"note "my password": hunter2"#), format!(r#"note "my password": {R}"#));
    assert_eq!(body(BodyKind::Text, "x 'db token'=abc y"), format!("x 'db token'={R} y"));
    assert_eq!(body(BodyKind::Text, "total tokens: 30"), format!("total tokens: {R}"), "unquoted: the name bytes");
}

/// Found by the fuzz target's "JSON stays JSON" property: the text pass did not know where
/// JSON strings end. A string ending in a sensitive `name:` or `name=` read the closing quote
/// as a value's opening one and replaced up to the next quote (`{"m":"csc:","n":"x"}` became
/// `{"m":"csc:"[REDACTED]"n":"x"}`); a quoted value opened inside a string ran past its end.
/// In a JSON layer the text pass now runs inside each string (and between them) on its own.
#[test]
fn json_strings_bound_the_text_pass() {
    for input in [
        r#"{"m":"csc:","n":"x"}"#,
        r#"{"a":"pin:"}"#,
        r#"["token=", "x"]"#,
        r#"{"m":"password= ","n":"x"}"#,
        r#"{"m":"token: 'a","n":"b'"}"#,
        r#"{"q":"f(password: \"s","v":{}}"#,
        r#"{"q":"f(password: \"s\"","v":{}}"#,
        r#"{"m":"x \"pin\": \"","n":"y"}"#,
        r#"{"m":"a\"token\":","n":"y"}"#,
        r#"{"m":"secret:\\","n":"y"}"#,
        r#"{"m":"see http://u:","n":"p@h"}"#,
        r#"{"m":"pin:\u0022","n":"y"}"#,
        r#"{"m":"pin=%22","n":"y%22"}"#,
    ] {
        let out = body(BodyKind::Json, input);
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{input} -> {out}");
    }
    // What the text pass finds inside a string it still replaces, inside that string.
    assert_eq!(body(BodyKind::Json, r#"{"m":"token: 'a","n":"b'"}"#), format!(r#"{{"m":"token: '{R}","n":"b'"}}"#));
    assert_eq!(body(BodyKind::Json, r#"{"m":"csc: 123","n":"x"}"#), format!(r#"{{"m":"csc: {R}","n":"x"}}"#));
    // Outside strings (single-quoted or bare keys: not JSON, but read as it), a sensitive name's
    // value is still the string that follows.
    assert_eq!(body(BodyKind::Json, r#"{'password': "s1", n: 1}"#), format!(r#"{{'password': "{R}", n: 1}}"#));
    assert_eq!(body(BodyKind::Json, r#"{token: "s2"}"#), format!(r#"{{token: "{R}"}}"#));
    assert_eq!(body(BodyKind::Json, r#"{'secret': 's3'}"#), format!(r#"{{'secret': '{R}'}}"#));
    // A single-quoted value holding a `"` is one value, not the start of a string.
    assert_eq!(
        body(BodyKind::Json, r#"{'secret': 'a"b', 'n': "it's"}"#),
        format!(r#"{{'secret': '{R}', 'n': "it's"}}"#)
    );
}

/// Found by review (main redacted each, the string-by-string JSON text pass printed the
/// secret): on text that looks like JSON but is not, the strings' bounds it guessed were wrong
/// (a key followed by `=`, a `"` in a single-quoted value or a log line, a `\"` outside any
/// string). The string-by-string pass now runs only on valid JSON; anything else gets the
/// whole-text pass.
#[test]
fn not_quite_json_gets_the_whole_text_pass() {
    for input in [
        r#"{"password"="S3CR3T"}"#,
        r#"{"password" = "S3CR3T"}"#,
        r#"{"a":"b"} "password"=S3CR3T"#,
        r#"{'a': '5"', "password": "S3CR3T"}"#,
        r#"[INFO] user typed 5" then {"password":"S3CR3T"}"#,
        r#"password:\"S3CR3T"#,
    ] {
        for kind in [BodyKind::Json, BodyKind::Text] {
            let (out, n) = r().redact_body(input.as_bytes(), kind, None, false);
            assert!(!out.contains("S3CR3T"), "{kind:?} {input} -> {out}");
            assert!(n >= 1, "{input} -> {out}");
        }
    }
    // Nested past serde_json's limit (128), valid JSON is judged not valid: the whole-text
    // pass, no stack overflow.
    let deep = format!(r#"{}{{"m":"password: S3CR3T"}}{}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(!body(BodyKind::Json, &deep).contains("S3CR3T"));
}

/// In valid JSON, a string followed by `:` whose contents are a sensitive name once
/// percent-decoded (as the whole-text pass judges a name) is a name: its value is replaced,
/// a bare scalar by a quoted replacement, and the line stays JSON.
#[test]
fn json_names_the_text_pass_knows() {
    for (input, expected) in [
        (r#"{"pass%77ord": "S3CR3T"}"#, format!(r#"{{"pass%77ord": "{R}"}}"#)),
        (r#"{"pass%77ord":12345,"n":1}"#, format!(r#"{{"pass%77ord":"{R}","n":1}}"#)),
        (r#"[{"pass%77ord" : true }]"#, format!(r#"[{{"pass%77ord" : "{R}" }}]"#)),
        (r#"{"password":"[REDACTED]"}"#, format!(r#"{{"password":"{R}"}}"#)),
    ] {
        let out = body(BodyKind::Json, input);
        assert_eq!(out, expected, "{input}");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{input} -> {out}");
    }
    // Counted once: the JSON layer replaced it, the text pass sees the replacement.
    assert_eq!(r().redact_body(br#"{"password":"x"}"#, BodyKind::Json, None, false).1, 1);
}
/// Found by the fuzz target (and on main): a card-shaped integer part of a bare JSON number
/// was replaced by a quoted replacement and the rest of the number left after it.
#[test]
fn a_card_in_a_bare_number_goes_whole() {
    for (input, expected) in [
        (r#"{"next":4111111111111111.111111,"l":[1]}"#, format!(r#"{{"next":"{R}","l":[1]}}"#)),
        (r#"[-4111111111111111, 4111111111111111.5E-3]"#, format!(r#"["{R}", "{R}"]"#)),
        (r#"{"n":411111111111.4111111111111111,"m":-1.4111111111111111}"#, format!(r#"{{"n":"{R}","m":"{R}"}}"#)),
        // A letter right after the digits: not a card, in JSON as in text.
        (r#"[4111111111111111e2]"#, r#"[4111111111111111e2]"#.to_string()),
        (r#"{"s":"4111111111111111.5"}"#, format!(r#"{{"s":"{R}.5"}}"#)),
    ] {
        let out = body(BodyKind::Json, input);
        assert_eq!(out, expected, "{input}");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{input} -> {out}");
    }
}
