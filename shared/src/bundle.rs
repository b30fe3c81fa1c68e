//! A bundle module: several filters in one `.wasm` (the `collection` crate), each served under
//! its own `root_id`, so that every plugin of a gateway using it shares one VM per worker
//! (Envoy shares a VM between plugins with the same `vm_id`, code and VM configuration).
//!
//! The SDK creates a root context knowing only its context id; which filter it is comes from
//! the plugin's `root_id`, readable (property `plugin_root_id`) once Envoy starts or configures
//! that root. [`choose`] is that choice, native so it is unit-tested; the bundle's root context
//! (collection/src/lib.rs, wasm) makes the chosen filter's root (`glue::Member`) and delegates
//! every callback to it.

/// The most members the bundle's `chain` root takes (collection/src/chain.rs refuses more at
/// load, naming `filters`; schemas/src gives `chain.schema.json` the same `maxItems`). A bound
/// on what one request runs through, and on the chain's per-stream state.
pub const CHAIN_MAX_MEMBERS: usize = 16;

/// The member of `members` whose id (`id_of`) is `root_id`, or the message to log and refuse
/// the configuration with: it names the root_id asked for and every one this module serves.
/// `None`: the host did not say (the `plugin_root_id` property could not be read).
pub fn choose<'a, M>(
    module: &str,
    members: &'a [M],
    root_id: Option<&[u8]>,
    id_of: impl Fn(&M) -> &str,
) -> Result<&'a M, String> {
    let known = || members.iter().map(&id_of).collect::<Vec<_>>().join(", ");
    let Some(raw) = root_id else {
        return Err(format!(
            "{module}: cannot read this plugin's root_id (property plugin_root_id); \
             a bundle serves one of its filters per root_id: {}",
            known()
        ));
    };
    match members.iter().find(|m| id_of(m).as_bytes() == raw) {
        Some(m) => Ok(m),
        None if raw.is_empty() => {
            Err(format!("{module}: this plugin has no root_id; set it to the filter to run, one of: {}", known()))
        }
        None => Err(format!(
            "{module}: root_id \"{}\" is none of this module's filters; set it to one of: {}",
            String::from_utf8_lossy(raw),
            known()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    const MEMBERS: [&str; 3] = ["jwt-auth", "rate-limit", "body-logger"];

    fn pick(root_id: Option<&[u8]>) -> Result<&'static str, String> {
        choose("collection", &MEMBERS, root_id, |m| m).copied()
    }

    #[test]
    fn the_root_id_picks_its_filter() {
        assert_eq!(pick(Some(b"rate-limit")), Ok("rate-limit"));
        assert_eq!(pick(Some(b"body-logger")), Ok("body-logger"));
    }

    #[test]
    fn an_unknown_root_id_is_refused_naming_the_known_ones() {
        let err = pick(Some(b"jwt_auth")).unwrap_err();
        assert!(err.contains("root_id \"jwt_auth\" is none of"), "{err}");
        assert!(err.ends_with("jwt-auth, rate-limit, body-logger"), "{err}");
        // No prefix or case folding: the id is the filter's name, exactly.
        assert!(pick(Some(b"JWT-AUTH")).is_err());
        assert!(pick(Some(b"jwt-auth ")).is_err());
    }

    #[test]
    fn a_missing_root_id_is_refused_with_a_hint() {
        let err = pick(Some(b"")).unwrap_err();
        assert!(err.contains("no root_id; set it"), "{err}");
        let err = pick(None).unwrap_err();
        assert!(err.contains("cannot read this plugin's root_id"), "{err}");
        assert!(err.contains("jwt-auth, rate-limit, body-logger"), "{err}");
    }
}
