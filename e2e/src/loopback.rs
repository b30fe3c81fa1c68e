//! A TCP server on 127.0.0.1 for the harness's test servers (echo upstream, token server, …):
//! one thread per connection, and the accept loop ends when the server is dropped.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

pub struct LoopbackServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl LoopbackServer {
    /// Listen on 127.0.0.1:port (0 = any free port). `handler` serves one connection; the flag
    /// it gets turns true once the server is dropped (for handlers that hold a connection open).
    pub fn start<H>(port: u16, handler: H) -> Result<LoopbackServer, String>
    where
        H: Fn(TcpStream, Arc<AtomicBool>) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let (handler, accept_stop) = (Arc::new(handler), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    let (handler, stop) = (handler.clone(), accept_stop.clone());
                    thread::spawn(move || handler(conn, stop));
                }
            }
        });
        Ok(LoopbackServer { port, stop })
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
