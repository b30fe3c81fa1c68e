//! Local replies. Every filter answers the same way: a short plain-text body and
//! `content-type: text/plain`, plus whatever headers the filter's protocol needs.

use crate::host::{Host, HostError};

pub fn send_text(host: &dyn Host, status: u32, body: &str, extra_headers: &[(&str, &str)]) -> Result<(), HostError> {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
    headers.push(("content-type", "text/plain"));
    headers.extend_from_slice(extra_headers);
    host.send_local_response(status, &headers, body.as_bytes())
}
