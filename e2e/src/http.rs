//! A deliberately small HTTP/1.1 client over a raw socket: tests need exact bytes (odd header
//! values, repeated headers) that higher-level clients normalise away.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    /// Names lowercased; values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of `name`, lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }
    pub fn has_header(&self, name: &str) -> bool {
        !self.header_all(name).is_empty()
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {}", String::from_utf8_lossy(v))?;
        }
        write!(f, "\n{}", self.body_text())
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(path: &str) -> Self {
        Request { method: "GET".into(), path: path.into(), headers: vec![], body: vec![] }
    }
    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.as_bytes().to_vec()));
        self
    }
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.into(), value.to_vec()));
        self
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
    /// First value of header `name` (case-insensitive), lossily decoded.
    pub fn header_value(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn encode(&self, host: &str) -> Vec<u8> {
        let mut out =
            format!("{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n", self.method, self.path).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() || self.method == "POST" || self.method == "PUT" {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Send over plain TCP to 127.0.0.1:port.
    pub fn send(&self, port: u16) -> Result<Response, String> {
        self.send_within(port, IO_TIMEOUT)
    }

    /// Send, giving up when a read or write waits longer than `timeout` (a request that may get
    /// no answer at all).
    pub fn send_within(&self, port: u16, timeout: Duration) -> Result<Response, String> {
        let stream = connect_within(port, timeout)?;
        exchange(stream, &self.encode(&format!("localhost:{port}")), &self.method)
    }

    /// Send over TLS to 127.0.0.1:port, trusting only `ca_pem` (for the demo certificate).
    pub fn send_tls(&self, port: u16, ca_pem: &[u8], server_name: &str) -> Result<Response, String> {
        let stream = connect(port)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_pem_certs(ca_pem)? {
            roots.add(cert).map_err(|e| format!("bad CA certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let tls = rustls::StreamOwned::new(conn, stream);
        exchange(tls, &self.encode(&format!("{server_name}:{port}")), &self.method)
    }
}

pub fn get(port: u16, path: &str) -> Result<Response, String> {
    Request::get(path).send(port)
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn connect(port: u16) -> Result<TcpStream, String> {
    connect_within(port, IO_TIMEOUT)
}

fn connect_within(port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    Ok(s)
}

fn parse_pem_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e:?}"))
}

fn exchange<S: Read + Write>(mut stream: S, request: &[u8], method: &str) -> Result<Response, String> {
    stream.write_all(request).map_err(|e| format!("write: {e}"))?;
    stream.flush().map_err(|e| format!("flush: {e}"))?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method == "HEAD")
}

/// Read one response: status line, headers, then a body framed by content-length, chunked
/// encoding, or connection close.
pub fn read_response<R: BufRead>(reader: &mut R, head_only: bool) -> Result<Response, String> {
    let status_line = read_line(reader)?;
    let status = std::str::from_utf8(&status_line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", String::from_utf8_lossy(&status_line)))?;
    let headers = read_headers(reader)?;
    let mut resp = Response { status, headers, body: vec![] };
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        resp.body = read_chunked(reader)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.trim().parse().map_err(|_| format!("bad content-length {len}"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
        resp.body = body;
    } else {
        reader.read_to_end(&mut resp.body).map_err(|e| format!("body: {e}"))?;
    }
    Ok(resp)
}

/// Read one request (the loopback servers' side): request line, headers, then a body framed
/// by content-length or chunked encoding. Blank lines before it are skipped.
pub fn read_request<R: BufRead>(reader: &mut R) -> Result<Request, String> {
    let line = loop {
        let line = read_line(reader)?;
        if !line.is_empty() {
            break line;
        }
    };
    let text = String::from_utf8_lossy(&line).into_owned();
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let headers = read_headers(reader)?;
    let request = Request { method, path, headers, body: vec![] };
    let body = if request.header_value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = request.header_value("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let mut b = vec![0; len];
        reader.read_exact(&mut b).map_err(|e| format!("body: {e}"))?;
        b
    };
    Ok(Request { body, ..request })
}

pub fn read_line<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line).map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed".into());
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(line)
}

pub fn read_headers<R: BufRead>(reader: &mut R) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let colon = line.iter().position(|b| *b == b':').ok_or("header line without ':'")?;
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let mut value = &line[colon + 1..];
        while value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            value = &value[1..];
        }
        headers.push((name, value.to_vec()));
    }
}

pub fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size_text = String::from_utf8_lossy(&size_line);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            read_headers(reader)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(|e| format!("chunk: {e}"))?;
        read_line(reader)?;
    }
}
