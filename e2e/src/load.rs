//! A load generator for tests: threads sending requests one after another, each on a new
//! connection, until stopped, recording every answer (or the error in its place).

use crate::http::{Request, Response};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One request's outcome: which request (`n`, unique across threads) and what came back.
#[derive(Debug)]
pub struct Outcome {
    pub n: u64,
    pub result: Result<Response, String>,
}

impl Outcome {
    /// A failure whatever the configuration: no answer (connection refused or reset, timeout,
    /// malformed answer) or a 5xx.
    pub fn failed(&self) -> bool {
        self.result.as_ref().map_or(true, |r| r.status >= 500)
    }

    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|r| r.status)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.result.as_ref().ok().and_then(|r| r.header(name))
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// `threads` senders to 127.0.0.1:`port`; request `n` is `request(n)`.
    pub fn start(port: u16, threads: usize, request: impl Fn(u64) -> Request + Send + Sync + 'static) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let request = Arc::new(request);
        let threads = (0..threads)
            .map(|_| {
                let (stop, sent, request) = (stop.clone(), sent.clone(), request.clone());
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        let result = request(n).send_within(port, Duration::from_secs(20));
                        out.push(Outcome { n, result });
                    }
                    out
                })
            })
            .collect();
        Load { stop, sent, threads }
    }

    /// Requests started so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Block until at least `more` further requests have started (so a phase of the test is
    /// sure to overlap traffic), at most 60 s.
    pub fn wait_for(&self, more: u64) {
        let target = self.sent() + more;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.sent() < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop, and every outcome in request order.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Outcome> = self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
        all.sort_by_key(|o| o.n);
        all
    }
}
