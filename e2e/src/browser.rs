//! Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol, for the
//! tests that prove what a browser does with a response (e2e/tests/browser.rs).
//!
//! A thin client of our own over `tungstenite`: the tests use a dozen CDP methods, each one JSON
//! message, and a synchronous client keeps them plain. (chromiumoxide would bring an async
//! runtime and a generated protocol crate of several hundred thousand lines to build on a
//! 2-core CI machine.)
//!
//! Each [`Browser`] is a child of the test process with a fresh profile and `HOME` (so a fresh
//! NSS certificate database and HSTS store); it is closed and killed when dropped. A missing
//! Chromium is an error, never a skip.

use crate::envoy::free_port;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// The flags every browser gets: headless, no sandbox (root in CI), no GPU, and no traffic of
/// its own (updates, sync, field trials, QUIC), so everything it sends is the test's.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long any single wait on the browser may take: generous, a loaded CI machine must not
/// turn into a false failure, and a hang must still end.
pub const WAIT: Duration = Duration::from_secs(30);

/// `CHROMIUM_BIN`, else Debian's binary (`/usr/lib/chromium/chromium`, what the
/// `/usr/bin/chromium` wrapper script runs), else `chromium` or `google-chrome` on `PATH`
/// (GitHub's Ubuntu runners ship Google Chrome, and Ubuntu's chromium is a snap).
pub fn chromium_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let debian = PathBuf::from("/usr/lib/chromium/chromium");
    if debian.exists() {
        return debian;
    }
    let path: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    ["chromium", "google-chrome"]
        .iter()
        .find_map(|name| path.iter().map(|dir| dir.join(name)).find(|p| p.exists()))
        .unwrap_or(debian)
}

#[derive(Default)]
pub struct BrowserOptions {
    /// A CA certificate (PEM) trusted in the browser's own NSS database (`certutil`), so HTTPS
    /// to the demo certificate is valid: HSTS is only honoured without certificate errors.
    pub trust_ca: Option<PathBuf>,
    /// More command-line flags, after [`CHROMIUM_FLAGS`].
    pub extra_flags: Vec<String>,
}

pub struct Browser {
    child: Option<Child>,
    dir: PathBuf,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Events read while waiting for something else, oldest first.
    events: VecDeque<Value>,
}

/// One tab, attached in flat mode: its commands and events carry `session`.
#[derive(Clone, Debug)]
pub struct Tab {
    pub target_id: String,
    pub session: String,
}

impl Browser {
    pub fn launch() -> Result<Browser, String> {
        Self::launch_with(BrowserOptions::default())
    }

    pub fn launch_with(opts: BrowserOptions) -> Result<Browser, String> {
        let bin = chromium_bin();
        if !bin.exists() {
            return Err(format!(
                "no Chromium at {} (run `make deps`, which installs Debian's chromium, or set CHROMIUM_BIN)",
                bin.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!("e2e-chromium-{}-{}", std::process::id(), free_port()));
        let (profile, home) = (dir.join("profile"), dir.join("home"));
        fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        if let Some(ca) = &opts.trust_ca {
            trust_ca_in_nss(&home, ca)?;
        }
        let log = fs::File::create(dir.join("chromium.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(CHROMIUM_FLAGS)
            .args(&opts.extra_flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            // Chromium on Linux reads the NSS database under $HOME/.pki/nssdb.
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut child = Some(child);
        let connected = connect(&profile, &mut child, &dir);
        let socket = match connected {
            Ok(socket) => socket,
            Err(e) => {
                if let Some(mut c) = child {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let log = fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("{e}; Chromium's log:\n{log}"));
            }
        };
        Ok(Browser { child, dir, socket, next_id: 0, events: VecDeque::new() })
    }

    /// Chromium's own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default()
    }

    /// A command to the browser (`session` None) or to a tab; its `result`, or the protocol's
    /// error as `Err`.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.socket.send(Message::text(message.to_string())).map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(msg) = self.read_message(deadline)? else {
                return Err(format!("{method}: no answer within {WAIT:?}"));
            };
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = msg.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            if msg.get("method").is_some() {
                self.events.push_back(msg);
            }
        }
    }

    /// The first event `method` (of `session`, when given) that `filter` accepts, among those
    /// already received and then those still to come; it is consumed. `None` after [`WAIT`].
    pub fn wait_event(
        &mut self,
        session: Option<&str>,
        method: &str,
        filter: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, String> {
        let matches = |e: &Value| {
            e.get("method").and_then(Value::as_str) == Some(method)
                && (session.is_none() || e.get("sessionId").and_then(Value::as_str) == session)
                && filter(e.get("params").unwrap_or(&Value::Null))
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(self.events.remove(i).and_then(|e| e.get("params").cloned()));
        }
        let deadline = Instant::now() + WAIT;
        while let Some(msg) = self.read_message(deadline)? {
            if matches(&msg) {
                return Ok(msg.get("params").cloned());
            }
            if msg.get("method").is_some() {
                self.events.push_back(msg);
            }
        }
        Ok(None)
    }

    /// Every buffered event `method` of `session` (without waiting for more), consumed.
    pub fn take_events(&mut self, session: &str, method: &str) -> Vec<Value> {
        self.drain_socket();
        let (taken, kept): (VecDeque<Value>, VecDeque<Value>) =
            std::mem::take(&mut self.events).into_iter().partition(|e| {
                e.get("method").and_then(Value::as_str) == Some(method)
                    && e.get("sessionId").and_then(Value::as_str) == Some(session)
            });
        self.events = kept;
        taken.into_iter().filter_map(|e| e.get("params").cloned()).collect()
    }

    /// Read what has already arrived, so a later look at the buffer is current.
    fn drain_socket(&mut self) {
        while let Ok(Some(msg)) = self.read_message(Instant::now()) {
            if msg.get("method").is_some() {
                self.events.push_back(msg);
            }
        }
    }

    /// One protocol message, or `None` once `deadline` passed with nothing to read.
    fn read_message(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).map(Some).map_err(|e| format!("CDP message: {e}"))
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(format!("CDP connection: {e}")),
            }
        }
    }

    /// A new tab on `about:blank`, attached, with the Page, Runtime and Network domains on.
    pub fn new_tab(&mut self) -> Result<Tab, String> {
        let created = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = str_field(&created, "targetId")?;
        self.attach(&target_id)
    }

    /// Attach to an existing page target (a popup) and turn its domains on.
    pub fn attach(&mut self, target_id: &str) -> Result<Tab, String> {
        let attached = self.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))?;
        let tab = Tab { target_id: target_id.to_string(), session: str_field(&attached, "sessionId")? };
        for domain in ["Page", "Runtime", "Network"] {
            self.call(Some(&tab.session), &format!("{domain}.enable"), json!({}))?;
        }
        Ok(tab)
    }

    /// Navigate and wait for the load event. `Err` carries a network error (`net::ERR_…`); a
    /// page the server answered, whatever its status, is `Ok`.
    pub fn navigate(&mut self, tab: &Tab, url: &str) -> Result<(), String> {
        self.drain_socket();
        self.take_events(&tab.session, "Page.loadEventFired");
        let nav = self.call(Some(&tab.session), "Page.navigate", json!({"url": url}))?;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            return Err(format!("{url}: {error}"));
        }
        match self.wait_event(Some(&tab.session), "Page.loadEventFired", |_| true)? {
            Some(_) => Ok(()),
            None => Err(format!("{url}: no load event within {WAIT:?}")),
        }
    }

    /// Evaluate `expression` in the tab's page (awaiting a promise) and return its value as
    /// JSON. DevTools evaluation is not subject to the page's CSP, so this reads the state of a
    /// page whose own scripts were blocked.
    pub fn eval(&mut self, tab: &Tab, expression: &str) -> Result<Value, String> {
        let r = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {ex}"));
        }
        Ok(r.pointer("/result/value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluate until the value is `true` (bounded by [`WAIT`]); whether it became true.
    pub fn wait_true(&mut self, tab: &Tab, expression: &str) -> Result<bool, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.eval(tab, expression).ok() == Some(Value::Bool(true)) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
            let tail = tail[tail.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "---- Chromium log ({}), last lines ----\n{tail}\n---- end of Chromium log ----",
                self.dir.display()
            );
        }
        // Ask politely (Chromium flushes and ends its helper processes), then make sure.
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"}).to_string();
        let _ = self.socket.send(Message::text(close));
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Wait for `DevToolsActivePort` (port, then path) in the profile and open the browser's
/// WebSocket; the socket gets a short read timeout so every wait can keep its own deadline.
fn connect(profile: &Path, child: &mut Option<Child>, dir: &Path) -> Result<WebSocket<TcpStream>, String> {
    let deadline = Instant::now() + WAIT;
    let active = profile.join("DevToolsActivePort");
    let (port, path) = loop {
        if let Ok(text) = fs::read_to_string(&active) {
            let mut lines = text.lines();
            if let (Some(Ok(port)), Some(path)) = (lines.next().map(str::parse::<u16>), lines.next()) {
                break (port, path.to_string());
            }
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(format!("Chromium exited ({status}) before listening (profile {})", dir.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("Chromium did not open its DevTools port within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("DevTools port {port}: {e}"))?;
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (socket, _) = tungstenite::client(url.as_str(), stream).map_err(|e| format!("{url}: {e}"))?;
    socket.get_ref().set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// A new NSS database under `home/.pki/nssdb` trusting `ca` to identify web sites (`C,,`).
fn trust_ca_in_nss(home: &Path, ca: &Path) -> Result<(), String> {
    let db = home.join(".pki/nssdb");
    fs::create_dir_all(&db).map_err(|e| e.to_string())?;
    let db_arg = format!("sql:{}", db.display());
    let steps: [&[&str]; 2] =
        [&["-N", "--empty-password"], &["-A", "-t", "C,,", "-n", "e2e-demo-ca", "-i", &ca.display().to_string()]];
    for args in steps {
        let out = Command::new("certutil")
            .args(["-d", &db_arg])
            .args(args)
            .output()
            .map_err(|e| format!("certutil (Debian's libnss3-tools; run `make deps`): {e}"))?;
        if !out.status.success() {
            return Err(format!("certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

fn str_field(v: &Value, name: &str) -> Result<String, String> {
    v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("no `{name}` in {v}"))
}
