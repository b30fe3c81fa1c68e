//! collection: every filter of this repository in one module (`dist/collection.wasm`), each
//! served under its own `root_id` (its name). Plugins that load it with the same `vm_id` share
//! one VM per worker instead of one per filter (README, "One VM for all filters").
//!
//! Each filter's crate is built with its `bundled` feature, which leaves out its own
//! `shared::main!`; this crate's registers a root context that becomes, once Envoy starts or
//! configures it, the root of the filter its `root_id` names ([`shared::bundle::choose`]), and
//! delegates every callback to it. That root lives here, not in `shared::glue`: any of it in
//! shared (even unused) measured +11 KB in every filter's own module.

use shared::RootFilter;

pub mod chain;

/// The `root_id`s this module serves: each filter's name.
pub const ROOT_IDS: &[&str] = &[
    security_headers::filter::SecurityHeadersRoot::NAME,
    jwt_auth::filter::JwtAuthRoot::NAME,
    rate_limit::filter::RateLimitRoot::NAME,
    token_fetch::filter::TokenFetchRoot::NAME,
    body_logger::filter::BodyLoggerRoot::NAME,
    // new filters above this line (scripts/new-filter.sh)
];

/// The module's name in its log lines.
#[cfg(target_arch = "wasm32")]
const NAME: &str = "collection";

#[cfg(target_arch = "wasm32")]
mod members {
    use shared::glue::{member, Member};

    pub static MEMBERS: &[Member] = &[
        member::<security_headers::filter::SecurityHeadersRoot>(),
        member::<jwt_auth::filter::JwtAuthRoot>(),
        member::<rate_limit::filter::RateLimitRoot>(),
        member::<token_fetch::filter::TokenFetchRoot>(),
        member::<body_logger::filter::BodyLoggerRoot>(),
        // new filters above this line (scripts/new-filter.sh)
        // Not a filter of its own: several of the above in one stream context (chain.rs).
        member::<crate::chain::ChainRoot>(),
    ];
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn _initialize() {
    shared::exports::initialize(root::new);
    shared::glue::install_panic_hook(NAME);
}

// Every stream callback: a bundle serves whichever filters its plugins name, and the chain
// needs them all.
#[cfg(target_arch = "wasm32")]
shared::http_exports!(all);

#[cfg(target_arch = "wasm32")]
mod root {
    use super::members::MEMBERS;
    use super::NAME;
    use shared::abi;
    use shared::exports::{HttpContext, RootContext};
    use shared::glue::Unconfigured;
    use shared::LogLevel;

    pub fn new(context_id: u32) -> Box<dyn RootContext> {
        Box::new(BundleRoot { context_id, member: None })
    }

    /// Empty until Envoy starts or configures it (only then can it read its `root_id`), then the
    /// chosen filter's root, which every callback is delegated to.
    struct BundleRoot {
        context_id: u32,
        member: Option<Box<dyn RootContext>>,
    }

    impl BundleRoot {
        /// The member's root, made on first need from the `plugin_root_id` property; `Err`: the
        /// message naming the root_id asked for and the known ones.
        fn resolve(&mut self) -> Result<&mut Box<dyn RootContext>, String> {
            if self.member.is_none() {
                let root_id = abi::property(&["plugin_root_id"]).ok().flatten();
                let chosen = shared::bundle::choose(NAME, MEMBERS, root_id.as_deref(), |m| m.root_id())?;
                self.member = Some(chosen.new_root(self.context_id));
            }
            self.member.as_mut().ok_or_else(String::new)
        }
    }

    impl RootContext for BundleRoot {
        fn on_vm_start(&mut self) -> bool {
            // An unknown root_id is refused at on_configure, where Envoy names the plugin.
            match self.resolve() {
                Ok(m) => m.on_vm_start(),
                Err(_) => true,
            }
        }

        fn on_configure(&mut self) -> bool {
            match self.resolve() {
                Ok(m) => m.on_configure(),
                Err(e) => {
                    let _ = abi::log(LogLevel::Critical, &format!("{e}; refusing to start"));
                    false
                }
            }
        }

        fn on_tick(&mut self) {
            if let Some(m) = self.member.as_mut() {
                m.on_tick();
            }
        }

        fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
            if let Some(m) = self.member.as_mut() {
                m.on_http_call_response(token, num_headers, body_size, num_trailers);
            }
        }

        fn on_grpc_call_response(&mut self, token: u32, status_code: u32, message_size: usize) {
            if let Some(m) = self.member.as_mut() {
                m.on_grpc_call_response(token, status_code, message_size);
            }
        }

        /// A request on a plugin no member took (Envoy refuses such a configuration, so this
        /// is a backstop): 503, never let through unfiltered.
        fn create_http_context(&self, context_id: u32) -> Box<dyn HttpContext> {
            match &self.member {
                Some(m) => m.create_http_context(context_id),
                None => Box::new(Unconfigured::new(NAME)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ROOT_IDS;

    /// Every filter crate of the repository is in the bundle (scripts/new-filter.sh adds new
    /// ones): a filter left out would answer "root_id ... is none of this module's filters".
    #[test]
    fn every_filter_of_the_repository_is_a_member() {
        let filters = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filters");
        let mut names: Vec<String> = std::fs::read_dir(&filters)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut ids: Vec<&str> = ROOT_IDS.to_vec();
        ids.sort_unstable();
        assert_eq!(ids, names);
    }
}
