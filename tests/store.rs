//! The configuration in the store: `wasmgate import`/`export` between YAML and the store,
//! losslessly, and gateways serving from the store (SQLite, or one PostgreSQL shared by
//! several) that follow its changes.

mod common;

use common::{Gateway, HttpClient, config_header, fixture, temp_dir, wasmgate};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmgate_config::GatewayConfig;

/// A config that uses every section: listeners and gateway settings (the header), a custom
/// plugin by relative path, a named policy bound twice, an environment with a variable,
/// credentials, two groups with domains, HTTP and mock backends, inline and named bindings.
fn full_config(dir: &Path, body: &str) -> String {
    std::fs::copy(fixture("inspector"), dir.join("inspector.wasm")).unwrap();
    format!(
        "{}plugins:\n  inspector: {{path: inspector.wasm}}\npolicies:\n  shared-cors: {{plugin: cors, config: {{allow_origin: ['https://app.example']}}, limits: {{cpu_ms: 20}}}}\nenvironments:\n- {{name: TEST, variables: {{UP: 'http://127.0.0.1:8'}}}}\n- {{name: RELEASE, variables: {{UP: 'http://127.0.0.1:9'}}}}\ncredentials:\n- {{id: app-2, key: ak2, secret: sk2-0123456789abcdef, apis: [a]}}\n- {{id: app-1, name: First, key: ak1, secret: sk1-0123456789abcdef, app_code: code1-0123456789abcdef, groups: [g]}}\ngroups:\n- id: g\n  domains: ['*']\n  apis:\n  - id: b\n    path: /b/{{id}}\n    method: [GET, POST]\n    environments: [RELEASE, TEST]\n    backend: {{http: {{url: '#{{UP}}', timeout_ms: 700}}}}\n    policies: [{{policy: shared-cors}}, {{plugin: inspector, on_error: open}}]\n  - id: a\n    path: /a\n    match: prefix\n    backend: {{mock: {{status: 200, headers: {{x-from: mock}}, body: '{body}'}}}}\n    policies: [{{policy: shared-cors}}]\n- id: e\n  domains: [api.example.com]\n  apis: []\n",
        config_header()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// `wasmgate import`; returns success and what it printed.
fn import(file: &Path, store: &str) -> (bool, String) {
    let out = wasmgate().args(["import", "--store", store, "-c"]).arg(file).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn export(store: &str) -> String {
    let out = wasmgate().args(["export", "--store", store]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The config as declared, with groups, APIs, credentials and environments in id order
/// (their order carries no meaning).
fn declared(text: &str, file: &Path) -> serde_json::Value {
    let mut config = GatewayConfig::parse_declared(text, file).unwrap();
    config.groups.sort_by(|a, b| a.id.cmp(&b.id));
    config.groups.iter_mut().for_each(|g| g.apis.sort_by(|a, b| a.id.cmp(&b.id)));
    config.credentials.sort_by(|a, b| a.id.cmp(&b.id));
    config.environments.sort_by(|a, b| a.name.cmp(&b.name));
    serde_json::to_value(config).unwrap()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("wasmgate.db").display())
}

async fn body_of(gw: &Gateway, path: &str) -> String {
    String::from_utf8_lossy(&HttpClient::default().get(&gw.url(path), &[]).await.body).into_owned()
}

/// Wait until `gw` answers `path` with `want`; how long that took.
async fn until_serving(gw: &Gateway, path: &str, want: &str, since: Instant) -> Duration {
    while body_of(gw, path).await != want {
        assert!(since.elapsed() < Duration::from_secs(10), "{path} never answered {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

#[test]
fn import_then_export_gives_back_the_same_configuration() {
    let dir = temp_dir();
    let original = full_config(&dir, "one");
    let file = write(&dir, "gateway.yaml", &original);
    let store = sqlite_url(&dir);
    let (ok, printed) = import(&file, &store);
    assert!(ok, "{printed}");
    assert!(printed.contains("imported"), "{printed}");

    let exported = export(&store);
    // Exported elsewhere: relative paths were made absolute on the way in.
    let elsewhere = temp_dir().join("exported.yaml");
    assert_eq!(declared(&exported, &elsewhere), declared(&original, &file));
    assert!(exported.contains("sk1"), "credentials keep their secrets");
    // And it imports again to the same thing.
    let again = write(&temp_dir(), "again.yaml", &exported);
    assert!(import(&again, &store).0);
    assert_eq!(export(&store), exported);
}

#[test]
fn a_config_that_would_not_load_is_not_imported() {
    let dir = temp_dir();
    let store = sqlite_url(&dir);
    let good = write(&dir, "good.yaml", &full_config(&dir, "one"));
    assert!(import(&good, &store).0);
    let before = export(&store);
    // The plugin's own config check refuses it, as `run` would.
    let bad = full_config(&dir, "two").replace("allow_origin: ['https://app.example']", "allow_origin: 7");
    let (ok, printed) = import(&write(&dir, "bad.yaml", &bad), &store);
    assert!(!ok);
    assert!(printed.contains("policies.shared-cors") && printed.contains("allow_origin"), "{printed}");
    assert_eq!(export(&store), before, "nothing changed");
}

#[tokio::test]
async fn a_gateway_serves_the_store_and_follows_its_changes() {
    let dir = temp_dir();
    let store = sqlite_url(&dir);
    assert!(import(&write(&dir, "one.yaml", &full_config(&dir, "one")), &store).0);
    let gw = Gateway::start_from_store(&store);
    assert_eq!(body_of(&gw, "/a").await, "one");

    assert!(import(&write(&dir, "two.yaml", &full_config(&dir, "two")), &store).0);
    let started = Instant::now();
    let took = until_serving(&gw, "/a", "two", started).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    gw.expect_log("config reloaded").await;
}

#[tokio::test]
async fn gateways_sharing_one_postgresql_converge_within_a_second() {
    let url = tokio::task::spawn_blocking(common::postgres::database).await.unwrap();
    let dir = temp_dir();
    assert!(import(&write(&dir, "one.yaml", &full_config(&dir, "one")), &url).0);
    let (first, second) = (Gateway::start_from_store(&url), Gateway::start_from_store(&url));
    assert_eq!((body_of(&first, "/a").await, body_of(&second, "/a").await), ("one".into(), "one".into()));

    // A change made elsewhere (here: an import from a third process) reaches both.
    assert!(import(&write(&dir, "two.yaml", &full_config(&dir, "two")), &url).0);
    let changed = Instant::now();
    let t1 = until_serving(&first, "/a", "two", changed).await;
    let t2 = until_serving(&second, "/a", "two", changed).await;
    println!("store change to serving: {t1:?} and {t2:?} after the import finished");
    assert!(t1.max(t2) < Duration::from_secs(1), "{t1:?} {t2:?}");

    // A change through one gateway's admin API (a new draft, then its publication) reaches both.
    let admin = format!("http://{}", first.admin.unwrap());
    let auth = format!("Bearer {}", first.admin_token.as_deref().unwrap());
    let send = |method: &'static str, path: &str, body: serde_json::Value| {
        let (url, auth) = (format!("{admin}{path}"), auth.clone());
        async move {
            HttpClient::default().send(method, &url, &[("authorization", &auth)], &body.to_string()).await
        }
    };
    let api = serde_json::json!({"group": "g", "path": "/a", "match": "prefix", "backend": {"mock": {"body": "three"}}});
    assert_eq!(send("PUT", "/apis/a", api).await.status, 200);
    let r = send("POST", "/apis/a/publications", serde_json::json!({"environment": "RELEASE"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let published = Instant::now();
    let t1 = until_serving(&first, "/a", "three", published).await;
    let t2 = until_serving(&second, "/a", "three", published).await;
    println!("admin publication to serving: {t1:?} and {t2:?} after the admin API answered");
    assert!(t1.max(t2) < Duration::from_secs(1), "{t1:?} {t2:?}");
}
