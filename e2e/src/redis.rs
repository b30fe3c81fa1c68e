//! A real Redis (Debian's `redis-server`) as a child process of the test, like [`crate::envoy`]:
//! a free loopback port, no persistence (nothing is written to disk, a restart starts empty),
//! readiness by `PING`, its log printed when a test fails, and the process killed and reaped on
//! drop. [`Redis::stop`] and [`Redis::restart`] (same port) are the "Redis down" mode of the
//! global rate-limit tests.

use crate::envoy::free_port;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `REDIS_SERVER_BIN`, else `redis-server` from `PATH` (`make deps` installs Debian's).
pub fn redis_server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN").filter(|p| !p.is_empty()).map_or_else(|| "redis-server".into(), PathBuf::from)
}

pub struct Redis {
    port: u16,
    child: Option<Child>,
    workdir: PathBuf,
}

impl Redis {
    /// Start `redis-server` on a free loopback port and wait until it answers `PING`.
    pub fn start() -> Result<Redis, String> {
        let workdir = std::env::temp_dir().join(format!("e2e-redis-{}-{}", std::process::id(), free_port()));
        fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
        let mut redis = Redis { port: free_port(), child: None, workdir };
        redis.restart()?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: a crash, not a shutdown). Connections drop at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// (Re)start on the same port, empty (no persistence), and wait for `PING`.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.workdir.join("redis.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let bin = redis_server_bin();
        let child = Command::new(&bin)
            .current_dir(&self.workdir)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            // No RDB snapshots, no AOF: a restart is an empty Redis, and nothing is written.
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| {
                format!(
                    "spawn {}: {e} (install Debian's redis-server: `make deps`, or set REDIS_SERVER_BIN)",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(self.command(&["PING"]), Ok(Reply::Status(s)) if s == "PONG") {
                return Ok(());
            }
            if !self.is_running() || Instant::now() > deadline {
                return Err(format!("redis-server did not become ready; log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.workdir.join("redis.log")).unwrap_or_default()
    }

    /// One command over a fresh connection (RESP2), for assertions: `DBSIZE`, `KEYS *`,
    /// `FLUSHALL`, …
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        stream.write_all(&out).map_err(|e| e.to_string())?;
        read_reply(&mut BufReader::new(stream))
    }

    /// The keys matching `pattern` (`KEYS`: fine for a test's handful of keys).
    pub fn keys(&self, pattern: &str) -> Vec<Vec<u8>> {
        match self.command(&["KEYS", pattern]) {
            Ok(Reply::Array(items)) => items
                .into_iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(b)) => Some(b),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log ({}) ----\n{}\n---- end of redis-server log ----",
                self.workdir.display(),
                self.log()
            );
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply")?;
    let number = || rest.parse::<i64>().map_err(|e| format!("{line:?}: {e}"));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data).map_err(|e| e.to_string())?;
                data.truncate(len);
                Reply::Bulk(Some(data))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Reply::Array(Vec::new()),
            Ok(n) => Reply::Array((0..n).map(|_| read_reply(reader)).collect::<Result<_, _>>()?),
        },
        _ => return Err(format!("not a RESP reply: {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_are_read() {
        let mut input: &[u8] = b"*3\r\n+OK\r\n$3\r\nabc\r\n$-1\r\n:42\r\n";
        assert_eq!(
            read_reply(&mut input).unwrap(),
            Reply::Array(vec![Reply::Status("OK".into()), Reply::Bulk(Some(b"abc".to_vec())), Reply::Bulk(None)])
        );
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Integer(42));
    }
}
