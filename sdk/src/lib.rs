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

mod view;

pub use bindings::exports::wasmgate::plugin::policy::Guest as __Guest;
pub use bindings::wasmgate::plugin::types::{
    BackendTarget, BindingInfo, BodyNeed, ConfigError, HeaderOp, HeaderSelection, Identity, KafkaProtocol,
    KafkaSecurity, KafkaSink, LogSinkDecl, Phases, Reply, RequestFields, SaslCredentials, SaslMechanism,
};
#[doc(hidden)]
pub use view::decode_exchange as __decode_exchange;
pub use view::{BackendOutcome, Caller, LogEntry, Method, Pairs, Request, Response, RouteInfo, Scheme};

/// Host capabilities a plugin may import.
pub mod host {
    pub use crate::bindings::wasmgate::plugin::clock;
    pub use crate::bindings::wasmgate::plugin::counters;
    pub use crate::bindings::wasmgate::plugin::credentials;
    pub use crate::bindings::wasmgate::plugin::crypto;
    pub use crate::bindings::wasmgate::plugin::http_outbound;
    pub use crate::bindings::wasmgate::plugin::kv;
    pub use crate::bindings::wasmgate::plugin::log;
    pub use crate::bindings::wasmgate::plugin::log_sink;
    pub use crate::bindings::wasmgate::plugin::metrics;
}

impl bindings::wasmgate::plugin::crypto::Digest {
    /// The digest's 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0; 32];
        for (chunk, word) in out.chunks_exact_mut(8).zip([self.a, self.b, self.c, self.d]) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        BackendOutcome, BindingInfo, BodyNeed, ConfigError, HeaderOp, HeaderSelection, Identity, LogEntry,
        Method, Phases, Policy, Reply, Request, RequestAction, RequestChanges, RequestFields, Response,
        ResponseAction, ResponseChanges, parse_config,
    };
}

/// What the request phase decides.
#[derive(Debug, Clone)]
pub enum RequestAction {
    Continue(RequestChanges),
    /// Answer now; the backend is not called.
    Respond(Reply),
}

/// Changes to the request (and its response) made in the request phase.
#[derive(Debug, Clone, Default)]
pub struct RequestChanges {
    pub headers: Vec<HeaderOp>,
    /// Applied to this request's response, whatever produces it (backend, plugin reply or
    /// gateway error), before any response phase runs: a plugin that knows its response
    /// headers in the request phase needs no response phase.
    pub response_headers: Vec<HeaderOp>,
    pub path: Option<String>,
    pub query: Option<String>,
    /// Replaces the caller identity for later policies, logs and the backend.
    pub identity: Option<Identity>,
    /// Added to (or overwritten in) the request context.
    pub context: Vec<(String, String)>,
    pub backend: Option<BackendTarget>,
}

/// What the response phase decides.
#[derive(Debug, Clone)]
pub enum ResponseAction {
    Continue(ResponseChanges),
    Replace(Reply),
}

#[derive(Debug, Clone, Default)]
pub struct ResponseChanges {
    pub status: Option<u16>,
    pub headers: Vec<HeaderOp>,
}

/// Header operations in the packed `header-ops` layout (wit/plugin.wit).
fn pack_ops(ops: &[HeaderOp]) -> Vec<u8> {
    fn parts(op: &HeaderOp) -> (u8, &String, Option<&String>) {
        match op {
            HeaderOp::Set((n, v)) => (0, n, Some(v)),
            HeaderOp::Append((n, v)) => (1, n, Some(v)),
            HeaderOp::AppendValue((n, v)) => (2, n, Some(v)),
            HeaderOp::SetIfAbsent((n, v)) => (3, n, Some(v)),
            HeaderOp::Remove(n) => (4, n, None),
        }
    }
    // Sized up front: growing the buffer op by op reallocated it several times per call.
    let size = ops.iter().map(parts).map(|(_, n, v)| 5 + n.len() + v.map_or(0, |v| 4 + v.len())).sum();
    let mut out = Vec::with_capacity(size);
    for (code, name, value) in ops.iter().map(parts) {
        out.push(code);
        for s in std::iter::once(name).chain(value) {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

impl From<RequestAction> for bindings::wasmgate::plugin::types::RequestAction {
    fn from(a: RequestAction) -> Self {
        use bindings::wasmgate::plugin::types as wit;
        match a {
            RequestAction::Continue(c) => wit::RequestAction::Continue(wit::RequestChanges {
                headers: pack_ops(&c.headers),
                response_headers: pack_ops(&c.response_headers),
                path: c.path,
                query: c.query,
                identity: c.identity,
                context: c.context,
                backend: c.backend,
            }),
            RequestAction::Respond(r) => wit::RequestAction::Respond(r),
        }
    }
}

impl From<ResponseAction> for bindings::wasmgate::plugin::types::ResponseAction {
    fn from(a: ResponseAction) -> Self {
        use bindings::wasmgate::plugin::types as wit;
        match a {
            ResponseAction::Continue(c) => wit::ResponseAction::Continue(wit::ResponseChanges {
                status: c.status,
                headers: pack_ops(&c.headers),
            }),
            ResponseAction::Replace(r) => wit::ResponseAction::Replace(r),
        }
    }
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
/// that names the field where serde stopped (`limits.rate`, `rules[2].when`).
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        // serde_json says where in the JSON it was; the operator wrote YAML, and the gateway
        // names the binding and the field instead.
        if let Some(at) = message.rfind(" at line ").filter(|&at| message[at..].contains(" column ")) {
            message.truncate(at);
        }
        // An unknown or missing field is reported at its parent or at itself (depending on
        // where serde stopped); its name is in the message.
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"));
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name.to_string(),
            (".", None) => String::new(),
            (at, Some(name)) if at == name || at.ends_with(&format!(".{name}")) => at.to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (at, None) => at.to_string(),
        };
        ConfigError { field, message }
    })
}

impl ConfigError {
    /// An error about `field` of the config.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}

impl BindingInfo {
    /// A binding that only runs in the request phase and reads no headers or body.
    pub fn request_only() -> Self {
        Self::new(Phases::REQUEST)
    }

    /// A binding that runs in `phases` and reads only the method; adjust the fields for
    /// what it does read (`request_fields`, headers, bodies).
    pub fn new(phases: Phases) -> Self {
        BindingInfo {
            phases,
            request_fields: RequestFields::empty(),
            request_headers: HeaderSelection::None,
            response_headers: HeaderSelection::None,
            request_body: BodyNeed::None,
            response_body: BodyNeed::None,
            fixed_response_headers: Vec::new(),
            log_sinks: Vec::new(),
            http_grants: Vec::new(),
        }
    }
}

/// The context key under which the gateway puts the client certificate's subject.
pub const CLIENT_CERT_SUBJECT: &str = "client_cert_subject";

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
        #[allow(clippy::new_without_default)] // only ever built in a `static`
        pub const fn new() -> Self {
            Bindings(RefCell::new(Vec::new()))
        }

        pub fn configure(&self, binding: u32, config: &str) -> Result<BindingInfo, ConfigError> {
            static HOOK: std::sync::Once = std::sync::Once::new();
            // Panic messages go to the gateway's log, tagged with API and plugin; the
            // default hook would write to stderr, which plugins do not have.
            HOOK.call_once(|| {
                std::panic::set_hook(Box::new(|info| {
                    crate::host::log::write(
                        crate::host::log::Level::Error,
                        &format!("plugin panicked: {info}"),
                    );
                }))
            });
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

/// Export a [`Policy`] type as this component's `wasmgate:plugin/policy`, with its manifest:
/// the crate's name and version and, with `schema = "FILE"` (a path from the crate's root),
/// the JSON Schema the gateway checks each binding's config against before `configure`.
///
/// ```ignore
/// wasmgate_sdk::export_policy!(Hello, schema = "schema.json");
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty, schema = $schema:literal) => {
        $crate::__manifest!(concat!(
            "{\"name\":\"",
            env!("CARGO_PKG_NAME"),
            "\",\"version\":\"",
            env!("CARGO_PKG_VERSION"),
            "\",\"language\":\"rust\",\"config_schema\":",
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $schema)),
            "}"
        ));
        $crate::__export_policy!($policy);
    };
    ($policy:ty) => {
        $crate::__manifest!(concat!(
            "{\"name\":\"",
            env!("CARGO_PKG_NAME"),
            "\",\"version\":\"",
            env!("CARGO_PKG_VERSION"),
            "\",\"language\":\"rust\"}"
        ));
        $crate::__export_policy!($policy);
    };
}

/// The manifest as a custom section of the core module (the component wraps it unchanged).
#[doc(hidden)]
#[macro_export]
macro_rules! __manifest {
    ($json:expr) => {
        const _: () = {
            const JSON: &str = $json;
            #[used]
            #[cfg_attr(target_family = "wasm", unsafe(link_section = "wasmgate-manifest"))]
            static MANIFEST: [u8; JSON.len()] = $crate::__bytes(JSON);
        };
    };
}

#[doc(hidden)]
pub const fn __bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_policy {
    ($policy:ty) => {
        const _: () = {
            static BINDINGS: $crate::__private::Bindings<$policy> = $crate::__private::Bindings::new();

            struct Exports;

            impl $crate::__Guest for Exports {
                fn configure(
                    binding: u32,
                    config: $crate::__String,
                ) -> Result<$crate::BindingInfo, $crate::ConfigError> {
                    BINDINGS.configure(binding, &config)
                }
                fn on_request(binding: u32, input: $crate::__Bytes) -> $crate::__RequestAction {
                    let request = $crate::Request::decode(&input);
                    BINDINGS.with(binding, |p| <$policy as $crate::Policy>::on_request(p, &request)).into()
                }
                fn on_response(binding: u32, input: $crate::__Bytes) -> $crate::__ResponseAction {
                    let (request, response) = $crate::__decode_exchange(&input);
                    BINDINGS
                        .with(binding, |p| <$policy as $crate::Policy>::on_response(p, &request, &response))
                        .into()
                }
                fn on_log(binding: u32, input: $crate::__Bytes) {
                    let entry = $crate::LogEntry::decode(&input);
                    BINDINGS.with(binding, |p| <$policy as $crate::Policy>::on_log(p, &entry))
                }
            }

    $crate::bindings::export!(Exports with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub type __String = String;
#[doc(hidden)]
pub type __Bytes = Vec<u8>;
#[doc(hidden)]
pub use bindings::wasmgate::plugin::types::{
    RequestAction as __RequestAction, ResponseAction as __ResponseAction,
};
