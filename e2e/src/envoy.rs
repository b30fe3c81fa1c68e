//! A real Envoy as a child process of the test: free ports substituted into the config, a
//! dynamic base id (so tests run in parallel), readiness through the admin endpoint, Envoy's
//! log printed when a test fails, and the process always killed and reaped.

use crate::{envoy_bin, repo_root, ADMIN_PORT};
use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free loopback port never handed out before in this process (parallel tests can't collide).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        if port == 0 {
            continue;
        }
        if let Ok(mut used) = HANDED_OUT.lock() {
            if !used.contains(&port) {
                used.push(port);
                return port;
            }
        }
    }
}

/// Configs listen on `0.0.0.0` (what compose and Kubernetes need); tests and the demo listen
/// on loopback only.
pub fn loopback_only(config: &str) -> String {
    config.replace("address: 0.0.0.0", "address: 127.0.0.1")
}

/// Every `port_value: N` in a config.
pub fn config_ports(config: &str) -> Vec<u16> {
    config
        .lines()
        .filter_map(|l| l.split_once("port_value:"))
        .filter_map(|(_, tail)| tail.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// Replace every `port_value: N` with a fresh port, the same N always with the same port, and
/// bind listeners to loopback. These are the only substitutions the harness makes.
pub fn substitute_ports(config: &str, ports: &mut BTreeMap<u16, u16>) -> String {
    let config = loopback_only(config);
    let mut out = String::with_capacity(config.len());
    for line in config.split_inclusive('\n') {
        if let Some(idx) = line.find("port_value:") {
            let (head, tail) = line.split_at(idx + "port_value:".len());
            let digits: String = tail.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(template) = digits.parse::<u16>() {
                let actual = *ports.entry(template).or_insert_with(free_port);
                let rest = &tail.trim_start()[digits.len()..];
                out.push_str(&format!("{head} {actual}{rest}"));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

pub struct EnvoyOptions {
    pub concurrency: u32,
    /// Keep the config's own ports (the demo); tests always get fresh ones.
    pub fixed_ports: bool,
    /// Envoy's log to this process's stderr instead of a file (the demo).
    pub log_to_terminal: bool,
    /// Template ports already decided (the bench: one upstream shared by several Envoys).
    pub preset_ports: BTreeMap<u16, u16>,
    /// Run Envoy on this CPU only (`taskset`), for the bench.
    pub pin_cpu: Option<u32>,
    /// Run Envoy under this program and its arguments (the bench's instruction counts run it
    /// under valgrind); the process id stays Envoy's, as the wrapper execs it.
    pub wrapper: Vec<String>,
    /// How long `start_with` waits for `/ready`: 120 s, generous as V8 compiles every module
    /// before Envoy is ready, slow on a loaded machine; far longer under valgrind.
    pub ready_timeout: Duration,
    /// Applied to the config text after port substitution: for negative tests only.
    pub edit: Option<Box<dyn Fn(String) -> String>>,
    pub log_level: &'static str,
    /// Added to Envoy's process environment (what `vm_config.environment_variables.host_env_keys`
    /// passes on to a VM).
    pub env: Vec<(String, String)>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        let concurrency = std::env::var("E2E_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        EnvoyOptions {
            concurrency,
            fixed_ports: false,
            log_to_terminal: false,
            preset_ports: BTreeMap::new(),
            pin_cpu: None,
            wrapper: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            edit: None,
            log_level: "info",
            env: Vec::new(),
        }
    }
}

pub struct Envoy {
    child: Option<Child>,
    ports: BTreeMap<u16, u16>,
    workdir: PathBuf,
}

impl Envoy {
    /// Start Envoy on `envoy-configs/<name>` with default options and wait until it is ready.
    pub fn start(config_name: &str) -> Result<Envoy, String> {
        Self::start_with(config_name, EnvoyOptions::default())
    }

    pub fn start_with(config_name: &str, opts: EnvoyOptions) -> Result<Envoy, String> {
        let mut envoy = Self::spawn(config_name, &opts)?;
        envoy.wait_ready(opts.ready_timeout)?;
        Ok(envoy)
    }

    /// Spawn without waiting for readiness (for tests that expect Envoy to refuse a config).
    pub fn spawn(config_name: &str, opts: &EnvoyOptions) -> Result<Envoy, String> {
        Self::spawn_path(&repo_root().join("envoy-configs").join(config_name), opts)
    }

    /// Start Envoy on a config outside `envoy-configs/` (a test-only one, e.g.
    /// `e2e/probe/envoy.yaml`), with the same substitutions, and wait until it is ready.
    pub fn start_path(template_path: &Path, opts: EnvoyOptions) -> Result<Envoy, String> {
        let mut envoy = Self::spawn_path(template_path, &opts)?;
        envoy.wait_ready(Duration::from_secs(60))?;
        Ok(envoy)
    }

    fn spawn_path(template_path: &Path, opts: &EnvoyOptions) -> Result<Envoy, String> {
        let bin = envoy_bin();
        if !bin.exists() {
            return Err(format!("no Envoy at {} (run `make envoy`, or set ENVOY_BIN)", bin.display()));
        }
        let template = fs::read_to_string(template_path).map_err(|e| format!("{}: {e}", template_path.display()))?;
        check_wasm_files_exist(&template)?;
        let mut ports = opts.preset_ports.clone();
        let mut config = if opts.fixed_ports {
            for template_port in config_ports(&template) {
                ports.insert(template_port, template_port);
            }
            loopback_only(&template)
        } else {
            substitute_ports(&template, &mut ports)
        };
        if let Some(edit) = &opts.edit {
            config = edit(config);
        }
        if crate::chain::via_chain() {
            config = crate::chain::into_chain(&config);
        }
        let workdir = std::env::temp_dir().join(format!("e2e-envoy-{}-{}", std::process::id(), free_port()));
        fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
        let config_path = workdir.join(config_file_name(&template_path.to_string_lossy()));
        fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let (stdout, stderr) = if opts.log_to_terminal {
            (Stdio::inherit(), Stdio::inherit())
        } else {
            let log = fs::File::create(workdir.join("envoy.log")).map_err(|e| e.to_string())?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            (Stdio::from(log), Stdio::from(log2))
        };
        let mut program: Vec<std::ffi::OsString> = opts.wrapper.iter().map(Into::into).collect();
        program.push(bin.clone().into());
        if let Some(cpu) = opts.pin_cpu {
            program.splice(0..0, ["taskset".into(), "-c".into(), cpu.to_string().into()]);
        }
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        let child = command
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo_root())
            .arg("--config-path")
            .arg(&config_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .args(["--log-level", opts.log_level])
            .args(["--drain-time-s", "1", "--parent-shutdown-time-s", "2"])
            // Someone watches a terminal log (the demo's access log): lines within half a
            // second, not Envoy's default 10 s flush interval.
            .args(if opts.log_to_terminal { &["--file-flush-interval-msec", "500"][..] } else { &[] })
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        Ok(Envoy { child: Some(child), ports, workdir })
    }

    /// The actual port that replaced template port `template` (e.g. `10000`).
    pub fn port(&self, template: u16) -> u16 {
        self.ports.get(&template).copied().unwrap_or(0)
    }

    /// Envoy's process id (CPU accounting in the bench).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn admin_port(&self) -> u16 {
        self.port(ADMIN_PORT)
    }

    /// The directory holding this Envoy's config copy and log (removed on drop).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.workdir.join("envoy.log")).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Block until Envoy exits (the demo's foreground wait).
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// Wait for exit (bounded); `None` if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Poll the admin `/ready` until it answers 200 (after [`Envoy::spawn`]); an error when
    /// Envoy exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_ready_polling(timeout, Duration::from_millis(50))
    }

    /// [`Envoy::wait_ready`], polling every `interval` (the bench times start-up to 10 ms).
    pub fn wait_ready_polling(&mut self, timeout: Duration, interval: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let admin = self.admin_port();
        loop {
            if let Ok(r) = crate::http::get(admin, "/ready") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            // Exited early: say why.
            let exited = self.exited().is_some();
            if exited || Instant::now() > deadline {
                return Err(format!("Envoy did not become ready; log:\n{}", self.log()));
            }
            std::thread::sleep(interval);
        }
    }

    /// Counters and gauges from the admin `/stats` page.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats_page("/stats")
    }

    fn stats_page(&self, path: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Ok(r) = crate::http::get(self.admin_port(), path) {
            for line in r.body_text().lines() {
                if let Some((k, v)) = line.split_once(": ") {
                    if let Ok(v) = v.trim().parse() {
                        out.insert(k.to_string(), v);
                    }
                }
            }
        }
        out
    }

    /// One stat, 0 when absent. Asks the admin for that stat only (a small page, quick even on
    /// a loaded machine).
    pub fn stat(&self, name: &str) -> u64 {
        let pattern: String = name
            .chars()
            .flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] })
            .collect();
        self.stats_page(&format!("/stats?filter=^{pattern}$")).get(name).copied().unwrap_or(0)
    }

    /// Connections each worker accepted on the listener at template port `template` (Envoy's
    /// per-worker listener stats), worker 0 first: which workers a test's connections reached.
    pub fn connections_per_worker(&self, template: u16) -> Vec<u64> {
        let port = self.port(template);
        let stats = self.stats();
        (0..)
            .map_while(|w| stats.get(&format!("listener.127.0.0.1_{port}.worker_{w}.downstream_cx_total")).copied())
            .collect()
    }

    /// Wait until `name` reaches at least `min`, and return it (the last value read when the
    /// generous deadline passes: a loaded CI machine must not turn into a false failure).
    pub fn wait_stat(&self, name: &str, min: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.stat(name);
            if v >= min || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- Envoy log ({}) ----\n{}\n---- end of Envoy log ----", self.workdir.display(), self.log());
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// `config` without the HTTP filter `name` (its `- name: <name>` list item, up to the next item
/// at the same indentation): the same listeners, routes and clusters with the filter gone, the
/// control that shows what a test observes is the filter's doing. `None` when absent.
pub fn without_http_filter(config: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = config.split_inclusive('\n').collect();
    let start = lines.iter().position(|l| l.trim_start().trim_end() == format!("- name: {name}"))?;
    let indent = lines[start].len() - lines[start].trim_start().len();
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            let own = l.len() - l.trim_start().len();
            !l.trim().is_empty() && own <= indent
        })
        .map_or(lines.len(), |i| start + 1 + i);
    Some([&lines[..start], &lines[end..]].concat().concat())
}

/// `config` with the JSON plugin configuration of the Wasm filter `name` (the block scalar after
/// `value: |`) changed by `edit`: the overlays tests document (e.g. report-only CSP). `None` when
/// the filter or its configuration is not found or is not JSON.
pub fn edit_plugin_config(config: &str, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Option<String> {
    let filter_at = config.find(&format!("- name: {name}\n"))?;
    let key_at = filter_at + config[filter_at..].find("value: |\n")?;
    let key_indent = key_at - config[..key_at].rfind('\n').map_or(0, |i| i + 1);
    let value_at = key_at + "value: |\n".len();
    // The block scalar: the lines indented deeper than its key (blank lines included).
    let block_len: usize = config[value_at..]
        .split_inclusive('\n')
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .map(str::len)
        .sum();
    let block = &config[value_at..value_at + block_len];
    let indent: String = block.lines().find(|l| !l.trim().is_empty())?.chars().take_while(|c| *c == ' ').collect();
    let mut json: serde_json::Value = serde_json::from_str(block).ok()?;
    edit(&mut json);
    let text = serde_json::to_string_pretty(&json).ok()?;
    let indented: String = text.lines().map(|l| format!("{indent}{l}\n")).collect();
    Some(format!("{}{indented}{}", &config[..value_at], &config[value_at + block_len..]))
}

/// `bench/router-only.yaml` → `router-only.yaml`: the copy lives flat in the work directory.
fn config_file_name(config_name: &str) -> String {
    Path::new(config_name).file_name().map_or_else(|| config_name.to_string(), |n| n.to_string_lossy().into_owned())
}

/// `filename: ….wasm` paths in a config (relative to the repository root), in block or flow
/// style (`local: { filename: dist/x.wasm }`).
pub fn wasm_files(config: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|l| l.split_once("filename:").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split([',', '}', '#']).next())
        .map(|p| p.trim().trim_matches(['"', '\'']).to_string())
        .filter(|p| p.ends_with(".wasm"))
        .collect()
}

/// Every module a config loads must have been built.
fn check_wasm_files_exist(config: &str) -> Result<(), String> {
    for path in wasm_files(config) {
        if !repo_root().join(Path::new(&path)).exists() {
            return Err(format!("{path} does not exist: run `make build` first"));
        }
    }
    Ok(())
}

/// `envoy --mode validate` on a config (ports substituted so it is the file the tests run).
pub fn validate(config_name: &str) -> Result<String, String> {
    let template_path = repo_root().join("envoy-configs").join(config_name);
    let template = fs::read_to_string(&template_path).map_err(|e| format!("{}: {e}", template_path.display()))?;
    check_wasm_files_exist(&template)?;
    validate_text(&substitute_ports(&template, &mut BTreeMap::new()), &config_file_name(config_name))
}

/// `envoy --mode validate` on config text (YAML, or JSON with a `.json` file name).
pub fn validate_text(config: &str, file_name: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("e2e-validate-{}-{}", std::process::id(), free_port()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(file_name);
    fs::write(&path, config).map_err(|e| e.to_string())?;
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .args(["--mode", "validate", "--config-path"])
        .arg(&path)
        .arg("--use-dynamic-base-id")
        .output()
        .map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Run a filter's own configuration validation, inside Envoy, on `plugin_config` (JSON): the
/// module `dist/<filter>.wasm` (the chain's: `dist/collection.wasm`, [`crate::module_of`])
/// under root_id `filter`, behind a minimal listener, checked with `--mode validate`.
/// `Err` carries the field path and message the filter logged when it refused.
pub fn validate_plugin_config(filter: &str, plugin_config: &str) -> Result<(), (String, String)> {
    let wasm = crate::dist_dir().join(format!("{}.wasm", crate::module_of(filter)));
    if !wasm.exists() {
        return Err((String::new(), format!("{} does not exist: run `make build` first", wasm.display())));
    }
    let config = serde_json::json!({
        "static_resources": {"listeners": [{
            "name": "validate",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "validate",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [
                        {"name": filter, "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {
                                "name": filter, "root_id": filter,
                                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config},
                                "vm_config": {"vm_id": filter, "runtime": "envoy.wasm.runtime.v8",
                                    "code": {"local": {"filename": wasm.display().to_string()}}}}}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                    ]}}]}]}]}
    });
    match validate_text(&config.to_string(), "validate.json") {
        Ok(_) => Ok(()),
        Err(log) => {
            // The root's own line (a chain member's refusal is logged first by the member,
            // with the path within the member; the chain's line has the whole path).
            let marker = "invalid configuration, refusing to start: ";
            let own = format!("{filter}: {marker}");
            let Some(rest) = log
                .find(&own)
                .map(|at| &log[at + own.len()..])
                .or_else(|| log.find(marker).map(|at| &log[at + marker.len()..]))
            else {
                return Err((String::new(), log));
            };
            let line = rest.lines().next().unwrap_or_default();
            match line.strip_prefix("field `").and_then(|rest| rest.split_once("`: ")) {
                Some((field, message)) => Err((field.to_string(), message.to_string())),
                None => Err((String::new(), line.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_files_found_in_both_yaml_forms() {
        let cfg = "code:\n  local: { filename: dist/a.wasm }\nlocal:\n  filename: \"dist/b.wasm\"\ncert: { filename: c.crt }\n";
        assert_eq!(wasm_files(cfg), vec!["dist/a.wasm", "dist/b.wasm"]);
        assert_eq!(config_file_name("bench/x.yaml"), "x.yaml");
    }

    #[test]
    fn an_http_filter_is_removed_whole() {
        let cfg = "http_filters:\n- name: a\n  typed_config:\n    x: 1\n\n- name: b\n  c: 2\nclusters: []\n";
        assert_eq!(without_http_filter(cfg, "a").unwrap(), "http_filters:\n- name: b\n  c: 2\nclusters: []\n");
        assert_eq!(
            without_http_filter(cfg, "b").unwrap(),
            "http_filters:\n- name: a\n  typed_config:\n    x: 1\n\nclusters: []\n"
        );
        assert!(without_http_filter(cfg, "z").is_none());
    }

    #[test]
    fn a_plugin_configuration_is_edited_as_json() {
        let cfg = "- name: f\n  config:\n    value: |\n      {\"a\": 1}\n    vm_config: {}\n";
        let out = edit_plugin_config(cfg, "f", |j| j["b"] = serde_json::json!(true)).unwrap();
        assert_eq!(out, "- name: f\n  config:\n    value: |\n      {\n        \"a\": 1,\n        \"b\": true\n      }\n    vm_config: {}\n");
        assert!(edit_plugin_config(cfg, "g", |_| ()).is_none());
    }

    #[test]
    fn ports_are_substituted_consistently() {
        let mut ports = BTreeMap::new();
        let out = substitute_ports(
            "a:\n  port_value: 10000\nb:\n    port_value: 18080 # x\nc: port_value: 10000\n",
            &mut ports,
        );
        let p = ports[&10000];
        assert_ne!(p, 10000);
        assert!(out.contains(&format!("  port_value: {p}\n")));
        assert!(out.contains(&format!("port_value: {} # x", ports[&18080])));
        assert_eq!(out.matches(&format!("port_value: {p}")).count(), 2);
    }
}
