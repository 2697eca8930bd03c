//! The admin REST API: the store's resources over HTTP/JSON, on a listener of its own.
//!
//! `GET /{collection}` lists (`?limit=` up to 500, `?after=` the last id of the previous
//! page), `GET|PUT|DELETE /{collection}/{id}` read, create or replace, and delete one
//! resource. Collections: `groups`, `environments` (with their variables), `apis`,
//! `policies`, `credentials`, `plugins`, `certificates`, `channels`, `settings` (`listeners`, `gateway`). Bodies are the config file's own
//! entries (an API also names its `group`). Every response to a resource carries its
//! revision as `ETag`; `If-Match` makes a write conditional on it and `If-None-Match: *`
//! makes a `PUT` create-only (412 when the condition fails).
//!
//! Publishing (`/apis/{id}/publications`, `/apis/{id}/deployments/{env}`), debugging an API
//! (`/apis/{id}/debug`, `debug.rs`), uploading a plugin component
//! (`/plugins/{name}/component`) and OpenAPI 3.0 import/export per group
//! (`/groups/{id}/openapi`, `openapi.rs`) are described in `openapi.json`, like everything
//! else.
//!
//! A write is accepted only if the whole configuration it leads to loads: it is assembled
//! and parsed exactly like a file, then built by the gateway ([`Gateway::build`]: plugins
//! validate their configs), so the admin API cannot store what `wasmgate run` would refuse.
//!
//! Every request needs `Authorization: Bearer TOKEN`. The token is made on first start and
//! only its SHA-256 is stored; it is never logged.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{debug, warn};
use wasmgate_config::{ConfigError, GatewayConfig};
use wasmgate_proxy::Snapshot;
use wasmgate_store::{Expect, Kind, Publication, Record, Resource, Store, StoreError, layout};

mod debug;
mod keys;
#[doc(hidden)]
pub mod openapi;

pub use keys::credential_keys;

/// What the admin API needs from the gateway it runs in. Called on blocking threads.
pub trait Gateway: Send + Sync + 'static {
    /// Build what `wasmgate run` would serve from this configuration: plugins compiled and
    /// their configs checked by the plugins themselves.
    fn build(&self, config: &GatewayConfig) -> Result<Snapshot, ConfigError>;

    /// Accept an uploaded plugin component if it is one this gateway can run (it compiles,
    /// links, exports the policy interface) and keep it where `build` finds it by its
    /// SHA-256, which is returned. The error says what is wrong with it.
    fn install_component(&self, bytes: &[u8]) -> Result<String, String>;

    /// What serves requests with `snapshot`, as the gateway's listeners do.
    fn proxy(&self, snapshot: Snapshot) -> wasmgate_proxy::ProxyState;

    /// The gateway's metrics in Prometheus' text format.
    fn metrics(&self) -> String;
}

const TOKEN_KEY: &str = "admin_token_sha256";
/// Larger request bodies are refused (a plugin policy's content is at most 64 KiB).
const MAX_BODY: usize = 1 << 20;
const MAX_PAGE: u32 = 500;
/// Uploaded plugin components are refused above this size (interpreters built into a
/// component, like Python's, take tens of MiB).
const MAX_COMPONENT: usize = 64 << 20;
/// How errors name a configuration that came through the admin API.
pub const ORIGIN: &str = "admin API";

pub struct Admin {
    store: Arc<Store>,
    gateway: Arc<dyn Gateway>,
    token_sha256: [u8; 32],
    /// One upload is read and compiled at a time: compiling a large component (an
    /// interpreter) takes hundreds of MiB for a moment, and concurrent uploads must not add
    /// those up.
    uploads: tokio::sync::Semaphore,
}

/// Read the admin token's hash, making a token first if the store has none. Returns the
/// new token when one was made: the only time it is ever shown.
pub async fn token(store: &Store) -> Result<(Option<String>, [u8; 32]), StoreError> {
    if let Some(stored) = store.meta(TOKEN_KEY).await? {
        return Ok((None, parse_hash(&stored)?));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the OS has randomness");
    let token = hex::encode(raw);
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if store.meta_init(TOKEN_KEY, &hex::encode(hash)).await? {
        return Ok((Some(token), hash));
    }
    // Another gateway made one meanwhile: use that.
    let stored = store.meta(TOKEN_KEY).await?.unwrap_or_default();
    Ok((None, parse_hash(&stored)?))
}

fn parse_hash(stored: &str) -> Result<[u8; 32], StoreError> {
    let bytes = hex::decode(stored).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| StoreError::Corrupt {
        kind: Kind::Setting,
        id: TOKEN_KEY.into(),
        reason: "not a SHA-256 in hex".into(),
    })
}

impl Admin {
    pub fn new(store: Arc<Store>, gateway: Arc<dyn Gateway>, token_sha256: [u8; 32]) -> Arc<Admin> {
        Arc::new(Admin { store, gateway, token_sha256, uploads: tokio::sync::Semaphore::new(1) })
    }

    /// Serve until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
                {
                    debug!(error = %e, "admin connection ended");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // The description holds no secrets; tools fetch it before they have a token.
        if req.method() == Method::GET && req.uri().path() == "/openapi.json" {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(OPENAPI.as_bytes())))
                .unwrap();
        }
        if !self.authorised(&req) {
            let message = "a valid `Authorization: Bearer TOKEN` is needed".into();
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return r;
        }
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    fn authorised(&self, req: &Request<Incoming>) -> bool {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = given.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        // Hashes are compared, so timing reveals nothing about the token itself.
        token.is_some_and(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())) == self.token_sha256)
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
        let path = req.uri().path().trim_matches('/').to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.split('/').collect();
        if let ["credentials", id, "reset"] = &segments[..]
            && req.method() == Method::POST
        {
            let id = id.to_string();
            return self.reset_keys(&id).await;
        }
        if let ["metrics"] = &segments[..]
            && req.method() == Method::GET
        {
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(self.gateway.metrics())))
                .unwrap());
        }
        if let ["plugins", name, "component"] = &segments[..]
            && req.method() == Method::PUT
        {
            let name = name.to_string();
            return self.upload(req, &name).await;
        }
        if let ["groups", group, "openapi"] = &segments[..] {
            let group = group.to_string();
            return self.openapi(req, &group).await;
        }
        if let ["apis", id, rest @ ..] = &segments[..]
            && !rest.is_empty()
        {
            let id = id.to_string();
            return self.lifecycle(req, &id, rest.iter().map(|s| s.to_string()).collect(), &query).await;
        }
        let mut parts = path.splitn(2, '/');
        let collection = parts.next().unwrap_or("");
        let id = parts.next();
        let Some(kind) = collection_kind(collection) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no collection `/{collection}`"),
            ));
        };
        match (req.method().clone(), id) {
            (Method::GET, None) => self.list(kind, &query).await,
            (Method::GET, Some(id)) => Ok(resource(StatusCode::OK, &self.store.get(kind, id).await?)),
            (Method::PUT, Some(id)) => {
                let expect = precondition(&req)?;
                let id = id.to_string();
                let body = read_json(req).await?;
                self.put(kind, &id, body, expect).await
            }
            (Method::DELETE, Some(id)) => {
                let expect = precondition(&req)?;
                self.validated(kind, id, None).await?.delete(kind, id, expect).await?;
                Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).unwrap())
            }
            (method, _) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here: GET /{collection}, GET|PUT|DELETE /{collection}/ID"),
            )),
        }
    }

    /// Publishing: `POST /apis/{id}/publications` (`{environment, description}`) publishes
    /// the API's current definition; `GET /apis/{id}/publications[?environment=]` is the
    /// history; `PUT /apis/{id}/deployments/{env}` (`{version}`) rolls back to a publication;
    /// `DELETE /apis/{id}/deployments/{env}` takes the API offline there.
    async fn lifecycle(
        &self,
        req: Request<Incoming>,
        id: &str,
        rest: Vec<String>,
        query: &str,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let method = req.method().clone();
        let rest_str: Vec<&str> = rest.iter().map(String::as_str).collect();
        match (method, &rest_str[..]) {
            (Method::GET, ["publications"]) => {
                let env = query.split('&').find_map(|p| p.strip_prefix("environment="));
                let history = self.store.history(id, env).await?;
                let items: Vec<Value> = history.iter().map(publication_json).collect();
                Ok(json_response(StatusCode::OK, &json!({"items": items})))
            }
            (Method::POST, ["publications"]) => {
                let body = read_json(req).await?;
                let env = body.get("environment").and_then(Value::as_str).map(str::to_string);
                let Some(env) = env else { return Err(ApiError::invalid("environment", "is needed".into())) };
                let description = body.get("description").and_then(Value::as_str).unwrap_or("").to_string();
                let draft = self.store.get(Kind::Api, id).await?.body;
                let published = wasmgate_store::in_environment(draft, &env);
                let store = self.check_served(Some((id, &env, Some(&published)))).await?;
                let p = store.publish(id, &env, &description, &published).await?;
                Ok(json_response(StatusCode::CREATED, &publication_json(&p)))
            }
            (Method::PUT, ["deployments", env]) => {
                let env = (*env).to_string();
                let body = read_json(req).await?;
                let Some(version) = body.get("version").and_then(Value::as_i64) else {
                    return Err(ApiError::invalid("version", "is needed: the publication to serve".into()));
                };
                let history = self.store.history(id, Some(&env)).await?;
                let Some(p) = history.iter().find(|p| p.version == version) else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("api `{id}` has no publication {version} in `{env}`"),
                    ));
                };
                // The rest of the configuration may have changed since: check it still loads.
                self.check_served(Some((id, &env, Some(&p.body)))).await?.rollback(id, &env, version).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &publication_json(&Publication { current: true, ..p.clone() }),
                ))
            }
            (Method::DELETE, ["deployments", env]) => {
                self.check_served(Some((id, env, None))).await?.unpublish(id, env).await?;
                Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).unwrap())
            }
            (Method::POST, ["debug"]) => {
                let call = debug::DebugCall::parse(read_json(req).await?)?;
                self.debug(id, call).await
            }
            (method, _) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {method} /apis/{id}/{}", rest.join("/")),
            )),
        }
    }

    /// `POST /credentials/{id}/reset`: new AK and SK (and AppCode, if it had one); the old
    /// ones stop working with the next snapshot. The answer is the only place the new secret
    /// is shown.
    async fn reset_keys(&self, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let current = self.store.get(Kind::Credential, id).await?;
        let (key, secret, app_code) = credential_keys().map_err(|e| ApiError::internal(e.to_string()))?;
        let mut body = current.body.clone();
        body["key"] = json!(key);
        body["secret"] = json!(secret);
        if body.get("app_code").is_some_and(|c| !c.is_null()) {
            body["app_code"] = json!(app_code);
        }
        let store = self.validated(Kind::Credential, id, Some(&body)).await?;
        let record = store.put(Kind::Credential, id, &body, Expect::Revision(current.revision)).await?;
        Ok(resource(StatusCode::OK, &record))
    }

    /// `PUT /plugins/{name}/component` (the component's bytes): check and compile the
    /// component, keep it in the store for every gateway, and make plugin `name` use it.
    /// APIs that bind the plugin are checked with the new component first, their configs
    /// by the new code.
    async fn upload(&self, req: Request<Incoming>, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let expect = precondition(&req)?;
        // Before reading tens of MiB for a name that cannot be stored.
        wasmgate_config::check_id(name).map_err(|m| ApiError::invalid("id", m))?;
        let _one_at_a_time = self.uploads.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
        let bytes = Limited::new(req.into_body(), MAX_COMPONENT).collect().await.map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the component could not be read (at most {MAX_COMPONENT} bytes): {e}"),
            )
        })?;
        let bytes = bytes.to_bytes();
        let gateway = self.gateway.clone();
        let checked = bytes.clone();
        let installed = tokio::task::spawn_blocking(move || gateway.install_component(&checked))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sha256 = installed.map_err(|m| ApiError::invalid("component", m))?;
        let stored = self.store.put_component(&bytes).await?;
        debug_assert_eq!(stored, sha256);
        self.put(Kind::Plugin, name, json!({ "sha256": sha256 }), expect).await
    }

    /// `GET /groups/{id}/openapi`: the group's APIs as an OpenAPI 3.0 document.
    /// `POST /groups/{id}/openapi` (`{document, backend}`): an API draft per operation of an
    /// OpenAPI 3.0 document (YAML or JSON, at most 100 KB), all or none, and what was skipped.
    async fn openapi(&self, req: Request<Incoming>, group: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        self.store.get(Kind::Group, group).await?;
        let (generation, records) = self.store.everything().await?;
        let apis: Vec<Value> = records
            .iter()
            .filter(|r| r.kind == Kind::Api && r.body.get("group").and_then(Value::as_str) == Some(group))
            .map(|r| r.body.clone())
            .collect();
        match *req.method() {
            Method::GET => Ok(json_response(StatusCode::OK, &openapi::export(group, &apis))),
            Method::POST => {
                let body = read_json(req).await?;
                let Some(document) = body.get("document").and_then(Value::as_str) else {
                    return Err(ApiError::invalid("document", "is needed: the OpenAPI 3.0 text".into()));
                };
                if document.len() > openapi::MAX_DOCUMENT {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!(
                            "the document is {} bytes; at most {}",
                            document.len(),
                            openapi::MAX_DOCUMENT
                        ),
                    ));
                }
                let Some(backend) = body.get("backend") else {
                    return Err(ApiError::invalid("backend", "is needed: the backend the APIs get".into()));
                };
                let taken = |id: &str| {
                    let api = records.iter().find(|r| r.kind == Kind::Api && r.id == id)?;
                    Some(api.body.get("group").and_then(Value::as_str).unwrap_or("?").to_string())
                };
                let import = openapi::import(document, group, backend, &taken)
                    .map_err(|m| ApiError::invalid("document", m))?;
                let created: Vec<Resource> =
                    import.apis.into_iter().map(|(id, api)| (Kind::Api, id, api)).collect();
                if created.is_empty() {
                    // Nothing to create is not a 201: say why each operation was left out.
                    let exists = import
                        .skipped
                        .iter()
                        .any(|s| s["reason"].as_str().is_some_and(|r| r.contains("exists already")));
                    let (status, code) = if exists {
                        (StatusCode::CONFLICT, "conflict")
                    } else {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
                    };
                    let message = "nothing imported: every operation was left out (see `skipped`)";
                    return Ok(json_response(
                        status,
                        &json!({"error": {"code": code, "location": "document", "message": message},
                                "created": [], "skipped": import.skipped}),
                    ));
                }
                let mut resources: Vec<_> = records.into_iter().map(Record::into_resource).collect();
                resources.extend(created.iter().cloned());
                self.load(&resources).await?;
                self.store.since(generation).create_all(&created).await?;
                let ids: Vec<&str> = created.iter().map(|(_, id, _)| id.as_str()).collect();
                Ok(json_response(StatusCode::CREATED, &json!({"created": ids, "skipped": import.skipped})))
            }
            ref method => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here: GET or POST /groups/{group}/openapi"),
            )),
        }
    }

    /// Check what gateways would serve with the publication of `api` in `env` replaced by
    /// `body` (or removed). Returns the store to make the change with: it refuses to write
    /// if anything else was written since this check read the store.
    async fn check_served(&self, change: Option<(&str, &str, Option<&Value>)>) -> Result<Store, ApiError> {
        let (generation, mut resources) = self.store.served_resources().await?;
        if let Some((api, env, body)) = change {
            let env_value = json!([env]);
            resources.retain(|(k, id, b)| {
                !(*k == Kind::Api && id == api && b.get("environments") == Some(&env_value))
            });
            resources.extend(body.map(|b| (Kind::Api, api.to_string(), b.clone())));
            wasmgate_store::only_served_authorisations(&mut resources);
        }
        self.load(&resources).await?;
        Ok(self.store.since(generation))
    }

    async fn list(&self, kind: Kind, query: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let mut limit = 100;
        let mut after = None;
        for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
            match k {
                "limit" => match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                    _ => return Err(ApiError::bad_request(format!("limit: `{v}` is not 1..={MAX_PAGE}"))),
                },
                "after" => after = Some(v.to_string()),
                _ => {}
            }
        }
        let page = self.store.list(kind, after.as_deref(), limit).await?;
        let next = if page.len() == limit as usize { page.last().map(|r| r.id.clone()) } else { None };
        let items: Vec<Value> = page.iter().map(with_meta).collect();
        Ok(json_response(StatusCode::OK, &json!({"items": items, "next": next})))
    }

    async fn put(
        &self,
        kind: Kind,
        id: &str,
        mut body: Value,
        expect: Expect,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        wasmgate_config::check_id(id).map_err(|m| ApiError::invalid("id", m))?;
        let Some(fields) = body.as_object_mut() else {
            return Err(ApiError::bad_request("the body must be a JSON object".into()));
        };
        // Entries that carry their own id must carry this one.
        if let Some(key) = id_field(kind) {
            match fields.get(key) {
                None => drop(fields.insert(key.into(), Value::String(id.into()))),
                Some(Value::String(given)) if given == id => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        key,
                        format!("{other} does not match the id in the URL `{id}`"),
                    ));
                }
            }
        }
        if kind == Kind::Setting && !["listeners", "gateway"].contains(&id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no setting `{id}`: listeners, gateway"),
            ));
        }
        let record = self.validated(kind, id, Some(&body)).await?.put(kind, id, &body, expect).await?;
        // Revision 1: this write created it.
        Ok(resource(if record.revision == 1 { StatusCode::CREATED } else { StatusCode::OK }, &record))
    }

    /// Check the configuration the store would hold with `kind/id` set to `body` (or
    /// removed), exactly as a file would be checked: the drafts, and for anything but an
    /// API draft also what gateways serve. Returns the store to make the change with: it
    /// refuses to write if anything else was written since this check read the store.
    async fn validated(&self, kind: Kind, id: &str, body: Option<&Value>) -> Result<Store, ApiError> {
        let (generation, records) = self.store.everything().await?;
        let changed = |resources: Vec<Resource>| -> Vec<Resource> {
            let mut resources: Vec<Resource> =
                resources.into_iter().filter(|(k, i, _)| !(*k == kind && i == id)).collect();
            resources.extend(body.map(|b| (kind, id.to_string(), b.clone())));
            resources
        };
        self.load(&changed(records.into_iter().map(Record::into_resource).collect())).await?;
        if kind != Kind::Api {
            let (_, served) = self.store.served_resources().await?;
            let mut served = changed(served);
            wasmgate_store::only_served_authorisations(&mut served);
            self.load(&served).await?;
        }
        Ok(self.store.since(generation))
    }

    /// `POST /apis/{id}/debug`: serve one request with the API's current definition (its
    /// draft, published or not) in the environment asked for, and the rest of the
    /// configuration as stored, on a snapshot of its own; nothing is published.
    async fn debug(&self, id: &str, call: debug::DebugCall) -> Result<Response<Full<Bytes>>, ApiError> {
        let (_, records) = self.store.everything().await?;
        if !records.iter().any(|r| r.kind == Kind::Api && r.id == id) {
            return Err(StoreError::NotFound { kind: Kind::Api, id: id.into() }.into());
        }
        let only_this_api = records.into_iter().filter(|r| r.kind != Kind::Api || r.id == id);
        let mut config = self.parse(&only_this_api.map(Record::into_resource).collect::<Vec<_>>()).await?;
        let default_environment = config.gateway.environment.clone();
        let environment = call.environment.clone().unwrap_or_else(|| default_environment.clone());
        let mut host = "localhost".to_string();
        for group in &mut config.groups {
            for api in &mut group.apis {
                api.environments = Some(vec![environment.clone()]);
                if let Some(domain) = group.domains.first() {
                    host = domain.name.clone();
                }
            }
        }
        let stage = (environment != default_environment).then_some(environment.as_str());
        let request = call.request(&host, stage)?;
        let snapshot = self.build(config).await?;
        let state = Arc::new(self.gateway.proxy(snapshot));
        let client = std::net::SocketAddr::new(call.client_ip, 0);
        let response = wasmgate_proxy::debug::call(state, request, client)
            .await
            .map_err(|e| ApiError::internal(format!("the debug call failed: {e}")))?;
        Ok(json_response(StatusCode::OK, &debug::report(&environment, &response)))
    }

    /// Load these resources as a configuration, exactly as a file would be loaded.
    async fn load(&self, resources: &[Resource]) -> Result<(), ApiError> {
        let config = self.parse(resources).await?;
        self.build(config).await.map(drop)
    }

    /// Parse these resources as a config file's text.
    async fn parse(&self, resources: &[Resource]) -> Result<GatewayConfig, ApiError> {
        let document = layout::assemble(resources).map_err(|e| ApiError::invalid(&e.at, e.message))?;
        let text = serde_norway::to_string(&document).map_err(|e| ApiError::internal(e.to_string()))?;
        let parsed = tokio::task::spawn_blocking(move || GatewayConfig::parse(&text, Path::new(ORIGIN)))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        parsed.map_err(ApiError::from)
    }

    async fn build(&self, config: GatewayConfig) -> Result<Snapshot, ApiError> {
        let gateway = self.gateway.clone();
        let built = tokio::task::spawn_blocking(move || gateway.build(&config))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        built.map_err(ApiError::from)
    }
}

/// The collections, by their URL name. `openapi.json` describes exactly these (a test
/// holds the two together).
pub const COLLECTIONS: [(&str, Kind); 9] = [
    ("groups", Kind::Group),
    ("environments", Kind::Environment),
    ("apis", Kind::Api),
    ("policies", Kind::Policy),
    ("credentials", Kind::Credential),
    ("plugins", Kind::Plugin),
    ("certificates", Kind::Certificate),
    ("channels", Kind::Channel),
    ("settings", Kind::Setting),
];

/// The publishing routes ([`Admin::lifecycle`]) and their methods, for the description's test.
pub const LIFECYCLE: [(&str, &[&str]); 7] = [
    ("/metrics", &["get"]),
    ("/credentials/{id}/reset", &["post"]),
    ("/plugins/{id}/component", &["put"]),
    ("/apis/{id}/publications", &["get", "post"]),
    ("/apis/{id}/debug", &["post"]),
    ("/apis/{id}/deployments/{environment}", &["delete", "put"]),
    ("/groups/{id}/openapi", &["get", "post"]),
];

/// This API's OpenAPI 3.0 description, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

fn collection_kind(name: &str) -> Option<Kind> {
    COLLECTIONS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The field of the file's entry that holds its id, for kinds whose entries carry one.
fn id_field(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Group | Kind::Api | Kind::Credential => Some("id"),
        Kind::Certificate | Kind::Environment => Some("name"),
        _ => None,
    }
}

fn precondition(req: &Request<Incoming>) -> Result<Expect, ApiError> {
    if let Some(v) = req.headers().get(header::IF_MATCH) {
        let v = v.to_str().unwrap_or("").trim().trim_matches('"');
        return v
            .parse()
            .map(Expect::Revision)
            .map_err(|_| ApiError::bad_request(format!("If-Match: `{v}` is not an ETag this API gave")));
    }
    if req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*") {
        return Ok(Expect::Absent);
    }
    Ok(Expect::Any)
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn publication_json(p: &Publication) -> Value {
    json!({"api": p.api_id, "environment": p.environment, "version": p.version, "description": p.description,
           "published_at_ms": p.published_at_ms, "current": p.current, "body": p.body})
}

fn with_meta(r: &Record) -> Value {
    json!({"id": r.id, "revision": r.revision, "updated_at_ms": r.updated_at_ms, "body": r.body})
}

fn resource(status: StatusCode, r: &Record) -> Response<Full<Bytes>> {
    let mut response = json_response(status, &with_meta(r));
    let etag = http::HeaderValue::from_str(&format!("\"{}\"", r.revision)).expect("digits");
    response.headers_mut().insert(header::ETAG, etag);
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// An admin request that failed: status, a stable code, and where in the configuration.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    location: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError { status, code, message, location: String::new() }
    }

    fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn invalid(location: &str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message,
            location: location.into(),
        }
    }

    fn internal(message: String) -> ApiError {
        warn!(error = %message, "admin request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let error = json!({"code": self.code, "message": self.message, "location": self.location});
        json_response(self.status, &json!({ "error": error }))
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        ApiError::invalid(&e.location, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            StoreError::Exists { .. } | StoreError::Conflict { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", message)
            }
            StoreError::Moved => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{message}: send it again to have it checked against the new configuration"),
            ),
            _ => ApiError::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{COLLECTIONS, LIFECYCLE, OPENAPI};
    use serde_json::Value;

    /// Every route the router serves is described, with the methods it accepts, and
    /// nothing else is.
    #[test]
    fn the_openapi_description_matches_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        let methods = |path: &str| -> Vec<String> {
            let item = paths.get(path).unwrap_or_else(|| panic!("{path} is not described"));
            let mut m: Vec<String> =
                item.as_object().unwrap().keys().filter(|k| *k != "parameters").cloned().collect();
            m.sort();
            m
        };
        let mut described: Vec<&String> = paths.keys().collect();
        described.sort();
        let mut served = vec!["/openapi.json".to_string()];
        for (name, _) in COLLECTIONS {
            assert_eq!(methods(&format!("/{name}")), ["get"], "/{name}");
            assert_eq!(methods(&format!("/{name}/{{id}}")), ["delete", "get", "put"], "/{name}/{{id}}");
            served.push(format!("/{name}"));
            served.push(format!("/{name}/{{id}}"));
        }
        for (path, expected) in LIFECYCLE {
            assert_eq!(methods(path), expected, "{path}");
            served.push(path.to_string());
        }
        served.sort();
        assert_eq!(described, served.iter().collect::<Vec<_>>());
        // Every reference resolves.
        let text = OPENAPI;
        for r in text.split("\"$ref\": \"#/").skip(1) {
            let target = &r[..r.find('"').unwrap()];
            let mut node = &doc;
            for part in target.split('/') {
                node = node.get(part).unwrap_or_else(|| panic!("dangling $ref #/{target}"));
            }
        }
    }
}
