//! Write Wasmgate policies in Rust.
//!
//! A policy is a type implementing [`Policy`]: `configure` parses the binding's JSON config
//! once (errors name the field), and the phase methods read typed views of the request and
//! response and return actions. [`export_policy!`] turns the type into the component's
//! exports; build the crate as a `cdylib` for `wasm32-wasip2` and the result is a
//! component the gateway loads.
//!
//! ```ignore
//! use wasmgate_sdk::prelude::*;
//!
//! struct Hello { greeting: String }
//!
//! impl Policy for Hello {
//!     fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
//!         let greeting = parse_config::<String>(config)?;
//!         Ok((Hello { greeting }, BindingInfo::request_only()))
//!     }
//!     fn on_request(&self, _req: &Request) -> RequestAction {
//!         RequestAction::Respond(Reply::text(200, &self.greeting))
//!     }
//! }
//! wasmgate_sdk::export_policy!(Hello);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "wasmgate_sdk::bindings",
        generate_all,
    });
}

pub use bindings::exports::wasmgate::plugin::policy::Guest as __Guest;
pub use bindings::wasmgate::plugin::types::{
    BackendOutcome, BackendTarget, BindingInfo, BodyNeed, ConfigError, HeaderOp,
    HeaderSelection, Identity, LogEntry, Phases, Reply, Request, RequestAction,
    RequestChanges, Response, ResponseAction, ResponseChanges, RouteInfo,
};

/// Host capabilities a plugin may import.
pub mod host {
    pub use crate::bindings::wasmgate::plugin::clock;
    pub use crate::bindings::wasmgate::plugin::counters;
    pub use crate::bindings::wasmgate::plugin::http_outbound;
    pub use crate::bindings::wasmgate::plugin::kv;
    pub use crate::bindings::wasmgate::plugin::log;
    pub use crate::bindings::wasmgate::plugin::log_sink;
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        BackendOutcome, BindingInfo, BodyNeed, ConfigError, HeaderOp, HeaderSelection,
        Identity, LogEntry, Phases, Policy, Reply, Request, RequestAction, RequestChanges,
        Response, ResponseAction, ResponseChanges, parse_config,
    };
}

/// A policy: one type, configured once per binding, called per request.
///
/// Phases a policy does not implement keep their defaults, which change nothing; declare
/// only the phases you implement in [`BindingInfo::phases`] so the host skips the others.
pub trait Policy: Sized + 'static {
    /// Parse and check `config` (the binding's config as JSON text).
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError>;

    /// Before the backend is called.
    fn on_request(&self, _request: &Request) -> RequestAction {
        RequestAction::Continue(RequestChanges::default())
    }

    /// After the backend answered, failed or timed out, or a plugin replied.
    fn on_response(&self, _request: &Request, _response: &Response) -> ResponseAction {
        ResponseAction::Continue(ResponseChanges::default())
    }

    /// After the response was sent.
    fn on_log(&self, _entry: &LogEntry) {}
}

/// Parse a binding's JSON config into `T`, turning serde's error into a [`ConfigError`]
/// that names the field where serde stopped.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, ConfigError> {
    serde_json::from_str(config).map_err(|e| {
        // serde_json reports "unknown field `x`, expected ..." or "invalid type: ... at
        // line 1 column 17"; pull the field name out where it says one.
        let message = e.to_string();
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"))
            .unwrap_or("")
            .to_string();
        ConfigError { field, message }
    })
}

impl ConfigError {
    /// An error about `field` of the config.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}

impl Default for RequestChanges {
    fn default() -> Self {
        RequestChanges {
            headers: Vec::new(),
            path: None,
            query: None,
            identity: None,
            context: Vec::new(),
            backend: None,
        }
    }
}

impl Default for ResponseChanges {
    fn default() -> Self {
        ResponseChanges { status: None, headers: Vec::new() }
    }
}

impl BindingInfo {
    /// A binding that only runs in the request phase and reads no headers or body.
    pub fn request_only() -> Self {
        Self::new(Phases::REQUEST)
    }

    /// A binding that runs in `phases` and reads no headers or body; adjust the fields for
    /// what it does read.
    pub fn new(phases: Phases) -> Self {
        BindingInfo {
            phases,
            request_headers: HeaderSelection::None,
            response_headers: HeaderSelection::None,
            request_body: BodyNeed::None,
            response_body: BodyNeed::None,
        }
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Request {
    /// The first value of header `name` (case-insensitive), if the binding selected it.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// A value set in the request context by an earlier policy.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive), if the binding selected it.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl Reply {
    /// A reply with no headers and no body.
    pub fn empty(status: u16) -> Self {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A `text/plain` reply.
    pub fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A gateway-style JSON error: `{"error_code","error_msg","request_id"}`, the shape the
    /// gateway uses for its own errors, so clients see one format.
    pub fn error(status: u16, code: &str, message: &str, request_id: &str) -> Self {
        let body = serde_json::json!({
            "error_code": code,
            "error_msg": message,
            "request_id": request_id,
        });
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!("{body}").into_bytes(),
        }
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use core::cell::RefCell;

    /// Parsed configs of the bindings this instance has seen, indexed by binding number.
    /// Wasm instances are single-threaded, so a `RefCell` in a static is sound.
    pub struct Bindings<P>(RefCell<Vec<Option<P>>>);

    // SAFETY: a component instance runs on one thread at a time.
    unsafe impl<P> Sync for Bindings<P> {}

    impl<P: Policy> Bindings<P> {
        pub const fn new() -> Self {
            Bindings(RefCell::new(Vec::new()))
        }

        pub fn configure(&self, binding: u32, config: &str) -> Result<BindingInfo, ConfigError> {
            let (policy, info) = P::configure(config)?;
            let mut all = self.0.borrow_mut();
            let i = binding as usize;
            if all.len() <= i {
                all.resize_with(i + 1, || None);
            }
            all[i] = Some(policy);
            Ok(info)
        }

        pub fn with<R>(&self, binding: u32, f: impl FnOnce(&P) -> R) -> R {
            let all = self.0.borrow();
            match all.get(binding as usize).and_then(Option::as_ref) {
                Some(p) => f(p),
                // The host always configures a binding before calling its phases.
                None => panic!("binding {binding} was not configured"),
            }
        }
    }
}

/// Export a [`Policy`] type as this component's `wasmgate:plugin/policy`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            static BINDINGS: $crate::__private::Bindings<$policy> = $crate::__private::Bindings::new();

            struct Exports;

            impl $crate::__Guest for Exports {
                fn configure(binding: u32, config: $crate::__String) -> Result<$crate::BindingInfo, $crate::ConfigError> {
                    BINDINGS.configure(binding, &config)
                }
                fn on_request(binding: u32, request: $crate::Request) -> $crate::RequestAction {
                    BINDINGS.with(binding, |p| <$policy as $crate::Policy>::on_request(p, &request))
                }
                fn on_response(binding: u32, request: $crate::Request, response: $crate::Response) -> $crate::ResponseAction {
                    BINDINGS.with(binding, |p| <$policy as $crate::Policy>::on_response(p, &request, &response))
                }
                fn on_log(binding: u32, entry: $crate::LogEntry) {
                    BINDINGS.with(binding, |p| <$policy as $crate::Policy>::on_log(p, &entry))
                }
            }

            $crate::bindings::export!(Exports with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub type __String = String;
