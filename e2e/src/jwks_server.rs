//! A loopback JWKS server for jwt-auth's remote JWKS (`remote_jwks.http_uri`, cluster `jwks`,
//! port [`crate::JWKS_PORT`]): serves a settable JWKS body to `GET <any path>` (or a body set for
//! that very path, for suites with one JWKS per provider), counts every request, and can be told
//! to fail the ways real ones do, while Envoy runs.

use crate::http::read_request;
use crate::loopback::LoopbackServer;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the current body.
    Serve,
    /// 200 with the current body after this many milliseconds.
    Delay(u64),
    /// This status, with a small non-JWKS body.
    Status(u16),
    /// Close every connection without answering (a crashed or restarting server).
    Gone,
    /// Answer nothing until the mode changes, then answer as the new mode says (a fetch held
    /// in flight for as long as a test needs, however slow the machine; 200 if the server stops).
    Hold,
}

struct State {
    mode: Mode,
    body: String,
    /// Bodies for given paths (query excluded); other paths get `body`.
    paths: BTreeMap<String, String>,
    calls: usize,
}

pub struct JwksServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl JwksServer {
    /// Listen on 127.0.0.1:port (0 = any free port), serving `body`.
    pub fn start(port: u16, body: &str) -> Result<JwksServer, String> {
        let state =
            Arc::new(Mutex::new(State { mode: Mode::Serve, body: body.to_string(), paths: BTreeMap::new(), calls: 0 }));
        let st = state.clone();
        let server = LoopbackServer::start(port, move |conn, stop| serve(conn, &st, &stop))?;
        Ok(JwksServer { port: server.port, state, _server: server })
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut s) = self.state.lock() {
            s.mode = mode;
        }
    }

    /// Serve another JWKS from now on (key rotation).
    pub fn set_body(&self, body: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.body = body.to_string();
        }
    }

    /// Serve `body` to requests for `path` (exactly, query excluded) from now on.
    pub fn set_path_body(&self, path: &str, body: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.paths.insert(path.to_string(), body.to_string());
        }
    }

    /// Requests received, whatever the answer.
    pub fn calls(&self) -> usize {
        self.state.lock().map(|s| s.calls).unwrap_or(0)
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let Ok(request) = read_request(&mut reader) else { return };
        let path = request.path.split('?').next().unwrap_or_default();
        let (mut mode, mut body) = {
            let Ok(mut s) = state.lock() else { return };
            s.calls += 1;
            let body = s.paths.get(path).unwrap_or(&s.body).clone();
            (s.mode.clone(), body)
        };
        while mode == Mode::Hold && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            let Ok(s) = state.lock() else { return };
            (mode, body) = (s.mode.clone(), s.paths.get(path).unwrap_or(&s.body).clone());
        }
        let answer = match mode {
            Mode::Serve | Mode::Hold => response(200, &body),
            Mode::Delay(ms) => {
                let mut left = ms;
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    let step = left.min(50);
                    std::thread::sleep(Duration::from_millis(step));
                    left -= step;
                }
                response(200, &body)
            }
            Mode::Status(code) => response(code, "{\"error\":\"unavailable\"}"),
            Mode::Gone => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        };
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

fn response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
