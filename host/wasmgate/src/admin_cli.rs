//! `wasmgate admin ...`: the common admin-API operations from the command line, so operators
//! need not write curl.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The admin API.
    #[arg(long, env = "WASMGATE_ADMIN_URL", default_value = "http://127.0.0.1:8001")]
    url: String,
    /// The admin token (printed at the gateway's first start).
    #[arg(long, env = "WASMGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List a collection's ids and revisions (all pages).
    List { collection: String },
    /// Print one resource as JSON.
    Get { collection: String, id: String },
    /// Create or replace the resources in a YAML or JSON file: one `{collection, id, body}`
    /// or a list of them, in order.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Publish an API's current definition in an environment.
    Publish {
        api: String,
        #[arg(long, default_value = "RELEASE")]
        env: String,
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// An API's publications, newest first.
    History {
        api: String,
        #[arg(long)]
        env: Option<String>,
    },
    /// Serve an earlier publication of an API again.
    Rollback {
        api: String,
        #[arg(long, default_value = "RELEASE")]
        env: String,
        #[arg(long)]
        version: i64,
    },
    /// Call an API with its current definition (published or not) and show the response and
    /// what each policy did.
    Debug {
        api: String,
        /// Path and query, as a client would send them.
        path: String,
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The request body.
        #[arg(short, long)]
        data: Option<String>,
        /// Default: the gateway's default environment.
        #[arg(long)]
        env: Option<String>,
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a plugin component (a .wasm built for wasm32-wasip2) as plugin NAME, for every
    /// gateway on the store.
    UploadPlugin { name: String, file: PathBuf },
    /// Import an OpenAPI 3.0 document (YAML or JSON) into GROUP: an API draft per operation,
    /// with its declared parameters and BACKEND; prints what was created and what was left
    /// out, and why. Publish the drafts to serve them.
    Import {
        group: String,
        file: PathBuf,
        /// The backend every imported API gets, as in the config (`{http: {url: ...}}` or
        /// `{mock: {...}}`), in YAML or JSON.
        #[arg(long)]
        backend: String,
    },
}

/// A request the admin API refused: what it said, and its whole JSON answer.
#[derive(Debug)]
struct Refused {
    message: String,
    body: Value,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// How often a request refused for a concurrent change is sent.
const CONFLICT_TRIES: u64 = 4;

struct Admin {
    url: String,
    auth: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = Bytes::from(body.map(Value::to_string).unwrap_or_default());
        self.send(method, path, "application/json", body).await
    }

    /// One request. A 409 means another change landed while this one was being checked and
    /// nothing was written; the API checks it again when it comes again, so it is resent, a
    /// few times, before the conflict is reported.
    async fn send(&self, method: &str, path: &str, content_type: &str, body: Bytes) -> Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut attempt = 1;
        let (status, value) = loop {
            let req = http::Request::builder()
                .method(method)
                .uri(&url)
                .header(http::header::AUTHORIZATION, &self.auth)
                .header(http::header::CONTENT_TYPE, content_type)
                .body(Full::new(body.clone()))?;
            let resp = self
                .client
                .request(req)
                .await
                .with_context(|| format!("cannot reach the admin API at {url}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let value: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
            if status != http::StatusCode::CONFLICT || attempt == CONFLICT_TRIES {
                break (status, value);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            attempt += 1;
        };
        if !status.is_success() {
            let e = &value["error"];
            let at = e["location"]
                .as_str()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{l}: "))
                .unwrap_or_default();
            let message =
                format!("{method} {path}: {status}: {at}{}", e["message"].as_str().unwrap_or("(no message)"));
            return Err(Refused { message, body: value }.into());
        }
        Ok(value)
    }
}

/// Print an import's outcome: the APIs created, then each operation left out and why.
fn print_import(outcome: &Value) {
    for id in outcome["created"].as_array().into_iter().flatten() {
        println!("created {}", id.as_str().unwrap_or(""));
    }
    for s in outcome["skipped"].as_array().into_iter().flatten() {
        let at = format!(
            "{} {}",
            s["method"].as_str().unwrap_or("").to_ascii_uppercase(),
            s["path"].as_str().unwrap_or("")
        );
        println!("skipped {}: {}", at.trim(), s["reason"].as_str().unwrap_or(""));
    }
}

pub async fn run(args: AdminArgs) -> Result<()> {
    let admin = Admin {
        url: args.url,
        auth: format!("Bearer {}", args.token),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    match args.command {
        AdminCommand::List { collection } => {
            let mut after = String::new();
            loop {
                let page = admin.call("GET", &format!("/{collection}?limit=500&after={after}"), None).await?;
                for item in page["items"].as_array().into_iter().flatten() {
                    println!("{}\trevision {}", item["id"].as_str().unwrap_or(""), item["revision"]);
                }
                match page["next"].as_str() {
                    Some(next) => after = next.to_string(),
                    None => break,
                }
            }
        }
        AdminCommand::Get { collection, id } => {
            let r = admin.call("GET", &format!("/{collection}/{id}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&r["body"])?);
        }
        AdminCommand::Apply { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            wasmgate_config::check_yaml_nesting(&text)
                .map_err(|m| anyhow::anyhow!("{}: {m}", file.display()))?;
            let doc: Value = serde_norway::from_str(&text)
                .with_context(|| format!("{}: not YAML or JSON", file.display()))?;
            let items = match doc {
                Value::Array(items) => items,
                one => vec![one],
            };
            for (i, item) in items.iter().enumerate() {
                let field = |k: &str| {
                    item[k]
                        .as_str()
                        .map(str::to_string)
                        .with_context(|| format!("{}[{i}]: no `{k}`", file.display()))
                };
                let (collection, id) = (field("collection")?, field("id")?);
                let r = admin.call("PUT", &format!("/{collection}/{id}"), Some(&item["body"])).await?;
                println!("{collection}/{id}: revision {}", r["revision"]);
            }
        }
        AdminCommand::Import { group, file, backend } => {
            let document =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let backend: Value = serde_norway::from_str(&backend).context("--backend: not YAML or JSON")?;
            let body = json!({"document": document, "backend": backend});
            let path = format!("/groups/{group}/openapi");
            match admin.call("POST", &path, Some(&body)).await {
                Ok(outcome) => print_import(&outcome),
                Err(e) => {
                    // Nothing imported: the answer still says why each operation was left out.
                    if let Some(refused) = e.downcast_ref::<Refused>() {
                        print_import(&refused.body);
                    }
                    return Err(e);
                }
            }
        }
        AdminCommand::Publish { api, env, message } => {
            let body = json!({"environment": env, "description": message});
            let p = admin.call("POST", &format!("/apis/{api}/publications"), Some(&body)).await?;
            println!("{api}: version {} published in {env}", p["version"]);
        }
        AdminCommand::History { api, env } => {
            let query = env.map(|e| format!("?environment={e}")).unwrap_or_default();
            let h = admin.call("GET", &format!("/apis/{api}/publications{query}"), None).await?;
            for p in h["items"].as_array().into_iter().flatten() {
                let current = if p["current"] == json!(true) { "  (served)" } else { "" };
                println!(
                    "{}\tversion {}\t{}{current}",
                    p["environment"].as_str().unwrap_or(""),
                    p["version"],
                    p["description"].as_str().unwrap_or("")
                );
            }
        }
        AdminCommand::Rollback { api, env, version } => {
            admin
                .call("PUT", &format!("/apis/{api}/deployments/{env}"), Some(&json!({"version": version})))
                .await?;
            println!("{api}: version {version} served in {env}");
        }
        AdminCommand::Debug { api, path, method, headers, data, env, json } => {
            let mut call = json!({"method": method, "path": path, "body": data, "environment": env});
            for h in &headers {
                let Some((name, value)) = h.split_once(':') else {
                    bail!("--header `{h}`: write it as `name: value`");
                };
                call["headers"][name.trim()] = json!(value.trim());
            }
            let report = admin.call("POST", &format!("/apis/{api}/debug"), Some(&call)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", describe_report(&method, &path, &report));
            }
        }
        AdminCommand::UploadPlugin { name, file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let path = format!("/plugins/{name}/component");
            let r = admin.send("PUT", &path, "application/wasm", Bytes::from(bytes)).await?;
            println!("plugin {name}: component sha256 {}", r["body"]["sha256"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// A debug report for people: the route, each policy's decision, the backend call, then
/// the response as the client got it.
fn describe_report(method: &str, path: &str, r: &Value) -> String {
    use std::fmt::Write;
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let ms = |v: &Value| format!("{:.3} ms", v.as_u64().unwrap_or(0) as f64 / 1000.0);
    let trace = &r["trace"];
    let mut out = String::new();
    let env = text(&r["environment"]);
    match trace["api"].as_str() {
        Some(api) => writeln!(out, "{method} {path} in {env}: api {api}"),
        None => writeln!(out, "{method} {path} in {env}: no route matched"),
    }
    .unwrap();
    for (i, s) in trace["steps"].as_array().into_iter().flatten().enumerate() {
        let mut what: Vec<String> = s["changes"].as_array().into_iter().flatten().map(text).collect();
        if s["declared"] == json!(true) {
            what.insert(0, "(declared at load)".into());
        }
        what.extend(s["status"].as_u64().map(|c| format!("status {c}")));
        what.extend(s["error"].as_str().map(|e| format!("error: {e}")));
        let (phase, plugin, decision) = (text(&s["phase"]), text(&s["plugin"]), text(&s["decision"]));
        let took = ms(&s["micros"]);
        let what = what.join("; ");
        let line = format!("  {:>2}. {phase:<8} {plugin:<20} {decision:<9} {took:>10}  {what}", i + 1);
        writeln!(out, "{}", line.trim_end()).unwrap();
    }
    let b = &trace["backend"];
    match b["kind"].as_str() {
        Some("http") => {
            let status = b["status"].as_u64().map(|s| s.to_string()).unwrap_or_else(|| "-".into());
            let (m, url, outcome) = (text(&b["method"]), text(&b["url"]), text(&b["outcome"]));
            writeln!(out, "  backend: {m} {url} → {status} {outcome} in {}", ms(&b["micros"])).unwrap();
            for h in b["headers"].as_array().into_iter().flatten() {
                writeln!(out, "    {}: {}", text(&h[0]), text(&h[1])).unwrap();
            }
        }
        Some("mock") => writeln!(out, "  backend: mock → {}", b["status"]).unwrap(),
        _ => writeln!(out, "  backend: not called").unwrap(),
    }
    let response = &r["response"];
    writeln!(out, "{} in {}", response["status"], ms(&r["elapsed_micros"])).unwrap();
    for h in response["headers"].as_array().into_iter().flatten() {
        writeln!(out, "{}: {}", text(&h[0]), text(&h[1])).unwrap();
    }
    out.push('\n');
    match response["body"].as_str() {
        Some(body) => out.push_str(body),
        None => out.push_str("(binary body; --json shows it in base64)"),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An admin API stand-in answering 409 the first `conflicts` times, then 200.
    async fn server(conflicts: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |_req: hyper::Request<hyper::body::Incoming>| {
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = if n < conflicts {
                                (
                                    409,
                                    r#"{"error":{"code":"conflict","message":"the configuration changed","location":""}}"#,
                                )
                            } else {
                                (200, r#"{"ok":true}"#)
                            };
                            let r =
                                hyper::Response::builder().status(status).body(Full::new(Bytes::from(body)));
                            async move { r }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        (url, seen)
    }

    fn admin(url: String) -> Admin {
        Admin { url, auth: "Bearer t".into(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    #[tokio::test]
    async fn a_write_refused_for_a_concurrent_change_is_sent_again() {
        let (url, seen) = server(2).await;
        let answer = admin(url).call("PUT", "/apis/a", Some(&json!({}))).await.unwrap();
        assert_eq!((answer["ok"].as_bool(), seen.load(Ordering::SeqCst)), (Some(true), 3));

        let (url, seen) = server(usize::MAX).await;
        let e = admin(url).call("PUT", "/apis/a", Some(&json!({}))).await.unwrap_err();
        assert!(e.to_string().contains("409") && e.to_string().contains("changed"), "{e}");
        assert_eq!(seen.load(Ordering::SeqCst), CONFLICT_TRIES as usize);
    }
}
