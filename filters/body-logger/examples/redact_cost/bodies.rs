// The bodies and the CPU clock of the redaction cost runs: `examples/redact_cost.rs` and
// `scripts/body-logger-redact-vs.sh` (which `include!`s this file) measure the same cases.

/// Nanoseconds this process has run on a CPU (`/proc/self/schedstat`, Linux): CPU time, not
/// wall time, so that other load on a shared machine weighs less.
pub fn cpu_ns() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/schedstat")?;
    Ok(stat.split_whitespace().next().ok_or("empty /proc/self/schedstat")?.parse()?)
}

/// The filter's default capture (`max_bytes`).
pub const MAX_BYTES: usize = 4096;

/// The body `make bench` posts: one JSON string of `size` bytes.
pub fn bench_body(size: usize) -> Vec<u8> {
    let filler = size.saturating_sub(r#"{"data":""}"#.len());
    format!(r#"{{"data":"{}"}}"#, "x".repeat(filler)).into_bytes()
}

/// An API body with nested objects, numbers, URLs, a JSON string holding JSON and a few secrets.
pub fn mixed_body(size: usize) -> Vec<u8> {
    let item = r#"{"id":1234,"author":"ann","keyword":"rust wasm","price":12.5,"tags":["a","b"],"url":"https://x.example/p?page=2&sort=asc","meta":"{\"k\":\"v\",\"n\":3}","password":"hunter2","accessToken":"abc.def"},"#;
    let mut s = String::from(r#"{"items":["#);
    while s.len() + item.len() < size {
        s.push_str(item);
    }
    s.push_str(r#"{"id":0}]}"#);
    s.into_bytes()
}
