//! What a user gets from a release: the binary alone serves every built-in plugin (they are
//! embedded), says which build it is, and names the override when a plugin folder is wrong.

mod common;

use common::{Gateway, HttpClient, Upstream};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary copied into an empty folder, run there with a clean environment: no source
/// tree, no plugin folder, no cache, nothing the build machine had.
fn lone_binary() -> (PathBuf, Command) {
    let dir = common::temp_dir();
    let binary = dir.join("wasmgate");
    std::fs::copy(env!("CARGO_BIN_EXE_wasmgate"), &binary).unwrap();
    let mut cmd = Command::new(&binary);
    cmd.current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.join("home"))
        .env("RUST_LOG", "info");
    (dir, cmd)
}

const KEY: &str = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
const SECRET: &str = "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe";
const APP_CODE: &str = "c0de1234c0de1234c0de1234c0de1234";

/// Every built-in plugin, bound as an operator would: `/open` with the policies that let a
/// request through, `/app` with app authentication and its quota.
fn every_built_in(authorizer: &str) -> String {
    format!(
        r#"listeners: [{{address: '127.0.0.1:0'}}]
credentials:
  - {{id: app-1, key: {KEY}, secret: {SECRET}, app_code: {APP_CODE}, apis: [app]}}
groups:
  - id: g
    apis:
      - id: open
        path: /open
        backend: {{mock: {{body: open}}}}
        policies:
          - {{plugin: access-control, config: {{ip: {{allow: ['127.0.0.0/8']}}}}}}
          - {{plugin: authorizer, config: {{url: 'http://{authorizer}/check', simple_authentication: true, identities: {{headers: [x-user]}}}}}}
          - {{plugin: throttling, config: {{api_limit: 100, period: 1, unit: minute, algorithm: local}}}}
          - {{plugin: request-throttling, config: {{api_limit: 100, period: 1, unit: minute, algorithm: local}}}}
          - {{plugin: circuit-breaker, config: {{breaker: {{type: condition, status_codes: [500], threshold: 5}}}}}}
          - {{plugin: cors, config: {{allow_origin: ['https://app.example.com']}}}}
          - {{plugin: response-headers, config: {{response_headers: [{{name: x-served-by, value: wasmgate, action: override}}]}}}}
          - {{plugin: kafka-log, config: {{brokers: ['127.0.0.1:9'], topic: access}}}}
      - id: app
        path: /app
        backend: {{mock: {{body: app}}}}
        policies:
          - {{plugin: app-auth, config: {{modes: [app-code]}}}}
          - {{plugin: credential-quota, config: {{limit: 1, unit: day, algorithm: local}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_alone_serves_every_built_in_plugin() {
    let authorizer = Upstream::start().await;
    let (dir, mut run) = lone_binary();
    let config = dir.join("gateway.yaml");
    std::fs::write(&config, every_built_in(&authorizer.addr.to_string())).unwrap();
    run.args(["run", "-c", "gateway.yaml"]);
    let gw = Gateway::launch(run, dir, config).unwrap_or_else(|e| panic!("did not start:\n{e}"));
    let c = HttpClient::default();

    let r = c.get(&gw.url("/open"), &[("origin", "https://app.example.com"), ("x-user", "ann")]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"open"[..]), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("x-served-by"), Some("wasmgate"));
    assert_eq!(authorizer.hits(), 1, "the authorizer was asked");

    assert_eq!(c.get(&gw.url("/app"), &[]).await.status, 401);
    assert_eq!(c.get(&gw.url("/app"), &[("x-apig-appcode", APP_CODE)]).await.status, 200);
    let over = c.get(&gw.url("/app"), &[("x-apig-appcode", APP_CODE)]).await;
    assert_eq!(over.status, 429, "the quota of one a day: {over:?}");

    // Every one came from the binary, compiled into the (new, empty) default cache.
    let log = gw.log();
    for name in wasmgate_config::BUILTIN_PLUGINS {
        assert!(log.contains(&format!("plugin=built-in {name} ")), "{name} not loaded from the binary:\n{log}");
    }
    let cache = gw.dir().join("home/.cache/wasmgate");
    let compiled = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(compiled, wasmgate_config::BUILTIN_PLUGINS.len(), "one precompiled file per plugin in {cache:?}");
}

#[test]
fn version_names_the_commit_and_the_plugin_contract() {
    let (_, mut cmd) = lone_binary();
    let out = cmd.arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let wit = std::fs::read_to_string(common::repo_root().join("wit/plugin.wit")).unwrap();
    let contract = wit.lines().find_map(|l| l.strip_prefix("package ")?.strip_suffix(';')).unwrap();
    let git = Command::new("git").current_dir(common::repo_root()).args(["rev-parse", "--short=12", "HEAD"]).output();
    let commit = git.ok().filter(|o| o.status.success()).map(|o| String::from_utf8(o.stdout).unwrap());
    let commit = commit.as_deref().map_or("unknown", str::trim);
    assert_eq!(
        text.trim(),
        format!("wasmgate {} (commit {commit}, plugin contract {contract})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_wrong_plugin_folder_is_named_with_the_option_that_set_it() {
    let (dir, mut cmd) = lone_binary();
    std::fs::write(dir.join("c.yaml"), every_built_in("127.0.0.1:9")).unwrap();
    let out = cmd.args(["validate", "-c", "c.yaml"]).env("WASMGATE_PLUGIN_DIR", "/nowhere").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nowhere/wasmgate_plugin_access_control.wasm"), "{err}");
    assert!(err.contains("--plugin-dir or WASMGATE_PLUGIN_DIR"), "{err}");

    // A folder that has them is used instead of the binary's own.
    let plugins = common::plugin_dir();
    let out = lone_binary().1.args(["validate", "-c"]).arg(dir.join("c.yaml")).arg("--plugin-dir").arg(&plugins).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("plugin={}", Path::new(&plugins).join("wasmgate_plugin_cors.wasm").display())), "{err}");
}
