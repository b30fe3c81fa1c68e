//! A loopback token server for token-fetch: counts calls, issues short-lived tokens, and can be
//! told to fail in the ways real ones do (error status, hang, garbage, gone).
//!
//! - `POST <any path>`: an OAuth2 client-credentials answer,
//!   `{"access_token":"tok-N","token_type":"Bearer","expires_in":L}`;
//! - `GET <any path>`: the classic example's shape, `x-token: tok-N` and `{"token":"tok-N"}`.
//!
//! Every request is counted and recorded (calls made while "down" too, as attempts), and every
//! token issued is recorded with when it was issued and the lifetime its answer gave
//! ([`TokenServer::issued_tokens`]), so a test can tell whether a token was still valid when
//! it was used.
//! [`Mode`] steers the answer; [`TokenServer::set_mode`] switches it while Envoy runs, which is
//! how the tests take the server away and bring it back without restarting Envoy.

use crate::http::{read_request, Request as Recorded};
use crate::loopback::LoopbackServer;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Issue a new token per call.
    Ok,
    /// Answer this status with an OAuth2 error body.
    Status(u16),
    /// Read the request, never answer (the caller's timeout fires).
    Hang,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Close the connection without answering (a crashed or restarting server).
    Down,
}

/// A token the server issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// `tok-N`.
    pub name: String,
    /// When the answer carrying it was built (just before it was written).
    pub at: Instant,
    /// The lifetime the answer gave (`expires_in`). A `GET` answer has none: its lifetime is
    /// the filter's configuration; this is then the server's setting, for reference.
    pub lifetime: Duration,
}

impl Issued {
    /// When the token expires by the server's clock.
    pub fn expires_at(&self) -> Instant {
        self.at + self.lifetime
    }
}

struct State {
    mode: Mode,
    lifetime_secs: u64,
    issued: Vec<Issued>,
    requests: Vec<Recorded>,
}

pub struct TokenServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl TokenServer {
    /// Listen on 127.0.0.1:port (0 = any free port), issuing tokens valid `lifetime_secs`.
    pub fn start(port: u16, lifetime_secs: u64) -> Result<TokenServer, String> {
        let state =
            Arc::new(Mutex::new(State { mode: Mode::Ok, lifetime_secs, issued: Vec::new(), requests: Vec::new() }));
        let st = state.clone();
        let server = LoopbackServer::start(port, move |conn, stop| serve(conn, st.clone(), stop))?;
        Ok(TokenServer { port: server.port, state, _server: server })
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut s) = self.state.lock() {
            s.mode = mode;
        }
    }

    pub fn set_lifetime(&self, secs: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.lifetime_secs = secs;
        }
    }

    /// Requests received, whatever the answer.
    pub fn calls(&self) -> usize {
        self.state.lock().map(|s| s.requests.len()).unwrap_or(0)
    }

    /// Tokens issued so far: `tok-1` … `tok-N`.
    pub fn issued(&self) -> u64 {
        self.state.lock().map(|s| s.issued.len() as u64).unwrap_or(0)
    }

    /// Every token issued so far, in order (`tok-1` first).
    pub fn issued_tokens(&self) -> Vec<Issued> {
        self.state.lock().map(|s| s.issued.clone()).unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }
}

pub fn token_name(n: u64) -> String {
    format!("tok-{n}")
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let Ok(Recorded { method, path, headers, body }) = read_request(&mut reader) else { return };
        let (mode, answer) = {
            let Ok(mut s) = state.lock() else { return };
            s.requests.push(Recorded { method: method.clone(), path, headers, body });
            let mode = s.mode.clone();
            let answer = match &mode {
                Mode::Ok => {
                    let token = token_name(s.issued.len() as u64 + 1);
                    let lifetime = Duration::from_secs(s.lifetime_secs);
                    s.issued.push(Issued { name: token.clone(), at: Instant::now(), lifetime });
                    if method == "GET" {
                        response(200, &[("x-token", &token)], &format!("{{\"token\":\"{token}\"}}"))
                    } else {
                        let body = format!(
                            "{{\"access_token\":\"{token}\",\"token_type\":\"Bearer\",\"expires_in\":{}}}",
                            s.lifetime_secs
                        );
                        response(200, &[], &body)
                    }
                }
                Mode::Status(code) => response(*code, &[], "{\"error\":\"temporarily_unavailable\"}"),
                Mode::Garbage => response(200, &[], "<html>not a token</html>"),
                Mode::Hang | Mode::Down => Vec::new(),
            };
            (mode, answer)
        };
        match mode {
            Mode::Down => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Mode::Hang => {
                // Hold the connection until the caller gives up (or the server stops).
                while !stop.load(Ordering::Relaxed) {
                    let mut buf = [0u8; 1];
                    let _ = reader.get_ref().set_read_timeout(Some(Duration::from_millis(200)));
                    match reader.get_mut().read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            _ => {
                if writer.write_all(&answer).is_err() {
                    return;
                }
            }
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}
