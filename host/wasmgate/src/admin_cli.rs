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
}

struct Admin {
    url: String,
    auth: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::AUTHORIZATION, &self.auth)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))?;
        let resp =
            self.client.request(req).await.with_context(|| format!("cannot reach the admin API at {url}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        if !status.is_success() {
            let e = &value["error"];
            let at = e["location"]
                .as_str()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{l}: "))
                .unwrap_or_default();
            bail!("{method} {path}: {status}: {at}{}", e["message"].as_str().unwrap_or("(no message)"));
        }
        Ok(value)
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
    }
    Ok(())
}
