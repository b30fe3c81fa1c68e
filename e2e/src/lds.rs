//! Hot reload through file-based LDS: Envoy starts on a shipped config whose listeners were
//! moved into a file Envoy watches (`dynamic_resources.lds_config.path_config_source`), and a
//! test pushes a changed listener by writing a new file and renaming it over the watched one
//! (the atomic replace Envoy's file watcher reacts to).
//!
//! Why LDS and not ECDS: a listener update recreates the HTTP filter chain, the filter
//! factories and the Wasm plugin with it, as an Istio WasmPlugin change does through ECDS; the
//! outcome for the filter (a new plugin configuration, the VM kept when `vm_config` is the
//! same) is the same, and file-based LDS needs no control plane, only the shipped configs with
//! their listeners moved. Each push also stamps the route's responses with `x-lds-version`,
//! so a test can tell which listener version served a response.

use crate::envoy::{Envoy, EnvoyOptions};
use serde_json::{json, Value};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The response header carrying the listener version that served a request.
pub const VERSION_HEADER: &str = "x-lds-version";

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

pub struct LdsEnvoy {
    pub envoy: Envoy,
    dir: PathBuf,
    /// The listeners last accepted, ports substituted.
    listeners: Vec<Value>,
    version: u64,
    vms_before_first_push: Option<(u64, u64)>,
}

/// What Envoy did with a pushed listener file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Accepted,
    Rejected,
}

impl LdsEnvoy {
    /// Start Envoy on `envoy-configs/<config_name>` with its static listeners served from a
    /// watched LDS file instead (version 1), `opts.edit` applied first.
    pub fn start(config_name: &str, mut opts: EnvoyOptions) -> Result<LdsEnvoy, String> {
        let dir = std::env::temp_dir().join(format!("e2e-lds-{}-{}", std::process::id(), crate::envoy::free_port()));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let listeners: Arc<Mutex<Result<Vec<Value>, String>>> = Arc::new(Mutex::new(Err("not converted".into())));
        let user_edit = opts.edit.take();
        let (out, lds_dir) = (listeners.clone(), dir.clone());
        opts.edit = Some(Box::new(move |text| {
            let text = match &user_edit {
                Some(edit) => edit(text),
                None => text,
            };
            let converted = to_lds(&text, &lds_dir);
            let (result, bootstrap) = match converted {
                Ok((bootstrap, listeners)) => (Ok(listeners), bootstrap),
                Err(e) => (Err(e), text),
            };
            if let Ok(mut slot) = out.lock() {
                *slot = result;
            }
            bootstrap
        }));
        let mut envoy = Envoy::spawn(config_name, &opts)?;
        let listeners = listeners.lock().map_err(|e| e.to_string())?.clone()?;
        envoy.wait_ready(opts.ready_timeout)?;
        Ok(LdsEnvoy { envoy, dir, listeners, version: 1, vms_before_first_push: None })
    }

    /// The listeners as last accepted (what Envoy serves), to edit for the next push.
    pub fn listeners(&self) -> Vec<Value> {
        self.listeners.clone()
    }

    /// Pushes so far that Envoy accepted plus those it rejected (the initial load included).
    pub fn lds_updates(&self) -> (u64, u64) {
        (
            self.envoy.stat("listener_manager.lds.update_success"),
            self.envoy.stat("listener_manager.lds.update_rejected"),
        )
    }

    /// Wasm VMs (V8) created since start and alive now (`wasm.envoy.wasm.runtime.v8.*`).
    pub fn vms(&self) -> (u64, u64) {
        (self.envoy.stat("wasm.envoy.wasm.runtime.v8.created"), self.envoy.stat("wasm.envoy.wasm.runtime.v8.active"))
    }

    /// [`LdsEnvoy::vms`] just before the first push.
    pub fn vms_before_first_push(&self) -> Option<(u64, u64)> {
        self.vms_before_first_push
    }

    /// Replace the watched file with `listeners` (stamped with the next version) and wait until
    /// Envoy accepted or rejected it.
    pub fn push(&mut self, mut listeners: Vec<Value>) -> Result<Push, String> {
        self.version += 1;
        for l in &mut listeners {
            stamp_version(l, self.version);
        }
        let before = self.lds_updates();
        if self.vms_before_first_push.is_none() {
            self.vms_before_first_push = Some(self.vms());
        }
        write_lds(&self.dir, self.version, &listeners)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.lds_updates();
            if now.1 > before.1 {
                return Ok(Push::Rejected);
            }
            if now.0 > before.0 {
                self.listeners = listeners;
                return Ok(Push::Accepted);
            }
            if Instant::now() > deadline {
                return Err(format!("LDS version {} neither accepted nor rejected within 60 s", self.version));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The version of the last push (1: the initial listeners).
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Drop for LdsEnvoy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The Wasm plugin configuration (JSON) of HTTP filter `filter` in `listeners`, changed by
/// `edit`; `false` when the filter is not there or its configuration is not JSON.
pub fn edit_plugin(listeners: &mut [Value], filter: &str, edit: impl FnOnce(&mut Value)) -> bool {
    let Some(config) = wasm_config(listeners, filter) else { return false };
    let Some(text) = config["configuration"]["value"].as_str() else { return false };
    let Ok(mut json) = serde_json::from_str::<Value>(text) else { return false };
    edit(&mut json);
    config["configuration"]["value"] = Value::String(json.to_string());
    true
}

/// The Wasm `config` (name, root_id, vm_config, …) of HTTP filter `filter`, to edit.
pub fn wasm_config<'a>(listeners: &'a mut [Value], filter: &str) -> Option<&'a mut Value> {
    http_filters(listeners).find(|f| f["name"] == filter).map(|f| &mut f["typed_config"]["config"])
}

fn http_filters(listeners: &mut [Value]) -> impl Iterator<Item = &mut Value> {
    listeners
        .iter_mut()
        .filter_map(|l| l["filter_chains"].as_array_mut())
        .flatten()
        .filter_map(|c| c["filters"].as_array_mut())
        .flatten()
        .filter_map(|f| f["typed_config"]["http_filters"].as_array_mut())
        .flatten()
}

/// Every virtual host answers with `x-lds-version: <version>`: a changed listener even when
/// nothing else changed (an identical listener is not an update), and a mark on each response.
fn stamp_version(listener: &mut Value, version: u64) {
    let Some(chains) = listener["filter_chains"].as_array_mut() else { return };
    for filter in chains.iter_mut().filter_map(|c| c["filters"].as_array_mut()).flatten() {
        let Some(hosts) = filter["typed_config"]["route_config"]["virtual_hosts"].as_array_mut() else { continue };
        for host in hosts {
            host["response_headers_to_add"] = json!([{
                "header": {"key": VERSION_HEADER, "value": version.to_string()},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
            }]);
        }
    }
}

fn write_lds(dir: &std::path::Path, version: u64, listeners: &[Value]) -> Result<(), String> {
    let resources: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["@type"] = Value::String(LISTENER_TYPE.into());
            l
        })
        .collect();
    let doc = json!({"version_info": version.to_string(), "resources": resources});
    let tmp = dir.join(format!("lds-{version}.json"));
    fs::write(&tmp, doc.to_string()).map_err(|e| e.to_string())?;
    // A rename, not a write in place: Envoy reacts to the file being moved into place and
    // never reads a half-written file.
    fs::rename(&tmp, dir.join("lds.json")).map_err(|e| e.to_string())
}

/// The bootstrap with its static listeners moved to `<dir>/lds.json` (written, version 1).
fn to_lds(text: &str, dir: &std::path::Path) -> Result<(String, Vec<Value>), String> {
    let mut bootstrap: Value = serde_norway::from_str(text).map_err(|e| format!("config is not YAML: {e}"))?;
    let mut listeners = match bootstrap["static_resources"]["listeners"].take() {
        Value::Array(l) => l,
        _ => return Err("config has no static listeners".into()),
    };
    if let Some(s) = bootstrap["static_resources"].as_object_mut() {
        s.remove("listeners");
    }
    for l in &mut listeners {
        stamp_version(l, 1);
    }
    write_lds(dir, 1, &listeners)?;
    // A dynamic resource needs a node identity (any: the file source ignores it).
    if bootstrap["node"].is_null() {
        bootstrap["node"] = json!({"id": "e2e", "cluster": "e2e"});
    }
    bootstrap["dynamic_resources"] = json!({"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": dir.join("lds.json").display().to_string()}
    }});
    Ok((bootstrap.to_string(), listeners))
}
