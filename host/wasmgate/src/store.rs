//! The configuration kept in the store instead of a file: `import` a YAML file into it,
//! `export` it back, and serve from it (`run --store`), following every change.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;
use wasmgate_config::GatewayConfig;
use wasmgate_runtime::PluginRuntime;
use wasmgate_store::{Store, layout};

/// How often a gateway serving from the store checks whether it changed. Changes reach every
/// gateway within this plus a snapshot build.
pub const POLL: Duration = Duration::from_millis(250);

/// `--store` without a URL: an SQLite file under the data directory
/// (`$XDG_DATA_HOME/wasmgate`, else `~/.local/share/wasmgate`).
pub fn default_url() -> Result<String> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set: give --store a URL")?;
    let dir = base.join("wasmgate");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(format!("sqlite://{}", dir.join("wasmgate.db").display()))
}

/// The URL without its password, to name the store in errors and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub async fn open(url: &str) -> Result<Arc<Store>> {
    let store = Store::open(url).await.with_context(|| format!("cannot open the store {}", redacted(url)))?;
    Ok(Arc::new(store))
}

/// The configuration gateways serve from the store (the published APIs), checked like a
/// file (errors name `origin`).
pub async fn read_config(store: &Store, origin: &str) -> Result<GatewayConfig> {
    let (_, resources) = store.served_resources().await?;
    let document = layout::assemble(&resources).with_context(|| format!("{origin}: inconsistent"))?;
    // Through the file format, so a stored config is checked exactly as a file is.
    let text = serde_norway::to_string(&document)?;
    Ok(GatewayConfig::parse(&text, origin.as_ref())?)
}

/// Copy the uploaded components `config` uses and this gateway has not got yet from the
/// store into its plugin cache (checked as at upload).
pub async fn fetch_components(
    store: &Store,
    config: &GatewayConfig,
    runtime: &Arc<PluginRuntime>,
) -> Result<()> {
    for (name, source) in &config.plugins {
        let Some(sha256) = &source.sha256 else { continue };
        if runtime.uploaded_path(sha256)?.exists() {
            continue;
        }
        let bytes = store.component(sha256).await.with_context(|| format!("plugins.{name}"))?;
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.install(&bytes))
            .await?
            .with_context(|| format!("plugins.{name}"))?;
    }
    Ok(())
}

/// The whole configuration (API drafts, each with the environments it names), as a YAML
/// file.
pub async fn export(store: &Store) -> Result<String> {
    let (_, records) = store.everything().await?;
    let resources: Vec<_> = records.into_iter().map(wasmgate_store::Record::into_resource).collect();
    Ok(serde_norway::to_string(&layout::assemble(&resources)?)?)
}

/// Replace the store's configuration with `config` (already validated) and publish every
/// API in the environments it names, in one transaction: the file is the desired state.
pub async fn import(store: &Store, config: &GatewayConfig, runtime: &PluginRuntime) -> Result<usize> {
    // Uploaded components travel with the configuration that names them.
    for (name, source) in &config.plugins {
        if let Some(sha256) = &source.sha256 {
            let path = runtime.uploaded_path(sha256)?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("plugins.{name}: {}", path.display()))?;
            store.put_component(&bytes).await?;
        }
    }
    let resources = layout::split(&serde_json::to_value(config)?)?;
    let default = std::slice::from_ref(&config.gateway.environment);
    let mut publish = Vec::new();
    for group in &config.groups {
        for api in &group.apis {
            let (_, _, body) = resources
                .iter()
                .find(|(k, id, _)| *k == wasmgate_store::Kind::Api && *id == api.id)
                .expect("split keeps every API");
            for env in api.environments.as_deref().unwrap_or(default) {
                publish.push((
                    api.id.clone(),
                    env.clone(),
                    wasmgate_store::in_environment(body.clone(), env),
                ));
            }
        }
    }
    store.replace_all(&resources, &publish, "import").await?;
    Ok(resources.len())
}

/// Ask for a reload whenever the store's generation moves past `seen`.
pub async fn watch(store: Arc<Store>, mut seen: i64, tx: mpsc::Sender<()>) {
    let mut tick = tokio::time::interval(POLL);
    let mut failing = false;
    loop {
        tick.tick().await;
        match store.generation().await {
            Ok(generation) => {
                failing = false;
                if generation != seen {
                    seen = generation;
                    let _ = tx.try_send(());
                }
            }
            // Serving goes on with the current snapshot; say so once per outage.
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "the store is unreachable; serving the last configuration read");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redacted("postgres://gw:s3cret@db:5432/wasmgate"), "postgres://gw:***@db:5432/wasmgate");
        assert_eq!(redacted("postgres://gw@db/wasmgate"), "postgres://gw@db/wasmgate");
        assert_eq!(redacted("sqlite:///var/lib/wasmgate.db"), "sqlite:///var/lib/wasmgate.db");
    }
}
