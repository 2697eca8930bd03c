//! What a user gets from a release: the binary alone serves every built-in plugin (they are
//! embedded), says which build it is, and names the override when a plugin folder is wrong;
//! and docs/plugins.md's walkthrough, with nothing but the binary and Rust.

mod common;

use common::{Gateway, HttpClient, Upstream};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary alone in an empty folder, run there with a clean environment: no source tree,
/// no plugin folder, no cache, nothing the build machine had.
fn lone_binary() -> (PathBuf, Command) {
    let dir = common::temp_dir();
    let binary = dir.join("wasmgate");
    // A hard link, not a copy: a copy is open for writing while it is made, and a child
    // another test forks meanwhile keeps that open, so executing it fails with ETXTBSY.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_wasmgate"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_wasmgate"), &binary).unwrap();
    }
    (dir.clone(), in_empty_home(Command::new(&binary), &dir, &dir.join("home")))
}

/// `cmd` run in `dir` with a clean environment whose home is `home` (new): Rust (rustup's and
/// cargo's homes, so a plugin can be built) and nothing of Wasmgate's.
fn in_empty_home(mut cmd: Command, dir: &Path, home: &Path) -> Command {
    let real_home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let from_env =
        |var: &str, default: &str| std::env::var_os(var).map_or(real_home.join(default), PathBuf::from);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUSTUP_HOME", from_env("RUSTUP_HOME", ".rustup"))
        .env("CARGO_HOME", from_env("CARGO_HOME", ".cargo"))
        .env("HOME", home)
        .env("RUST_LOG", "info");
    cmd
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
        assert!(
            log.contains(&format!("plugin=built-in {name} ")),
            "{name} not loaded from the binary:\n{log}"
        );
    }
    let cache = gw.dir().join("home/.cache/wasmgate");
    let compiled = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(
        compiled,
        wasmgate_config::BUILTIN_PLUGINS.len(),
        "one precompiled file per plugin in {cache:?}"
    );
}

#[test]
fn version_names_the_commit_and_the_plugin_contract() {
    let (_, mut cmd) = lone_binary();
    let out = cmd.arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let wit = std::fs::read_to_string(common::repo_root().join("wit/plugin.wit")).unwrap();
    let contract = wit.lines().find_map(|l| l.strip_prefix("package ")?.strip_suffix(';')).unwrap();
    let git = Command::new("git")
        .current_dir(common::repo_root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
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
    let out = lone_binary()
        .1
        .args(["validate", "-c"])
        .arg(dir.join("c.yaml"))
        .arg("--plugin-dir")
        .arg(&plugins)
        .output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("plugin={}", Path::new(&plugins).join("wasmgate_plugin_cors.wasm").display())),
        "{err}"
    );
}

/// docs/plugins.md's walkthrough with only the binary and Rust: `plugin new` → `plugin build`
/// (precompiled) → `plugin test` → the printed config served and called. Each step's time
/// is printed (docs/plugins.md reports them).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_is_made_tested_and_served_with_only_the_binary() {
    let (dir, _) = lone_binary();
    let step = |name: &str, args: &[&str], at: &Path| {
        let started = std::time::Instant::now();
        let out = in_empty_home(Command::new(dir.join("wasmgate")), at, &dir.join("home"))
            .args(args)
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("walkthrough: {name} took {:.1} s", started.elapsed().as_secs_f64());
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), text)
    };
    let (ok, _, text) = step("plugin new", &["plugin", "new", "tenant-check"], &dir);
    assert!(ok, "{text}");
    let project = dir.join("tenant-check");
    assert!(project.join("sdk/src/lib.rs").is_file() && project.join("wit/plugin.wit").is_file(), "{text}");

    let (ok, printed, text) =
        step("plugin build", &["plugin", "build", "--precompile", "--listen", "127.0.0.1:0"], &project);
    assert!(ok, "{text}");
    assert!(printed.contains("tenant-check 0.1.0 (rust), built against wasmgate:plugin@"), "{printed}");
    assert!(!text.contains("Compiling wasmtime"), "a plugin build compiled the gateway's runtime:\n{text}");
    // The printed config, as an operator would copy it: from `---` to `...`.
    let start = printed.find("\n---\n").expect("a YAML document") + 1;
    let end = printed.find("\n...\n").expect("the document's end") + 5;
    let config = &printed[start..end];

    let (ok, _, text) = step("plugin test", &["plugin", "test"], &project);
    assert!(ok && text.contains("3 passed, 0 failed"), "{text}");
    // A case that cannot pass makes the run fail, saying where.
    let tests = std::fs::read_to_string(project.join("tests.yaml")).unwrap();
    let wrong = "  - name: wrong on purpose\n    config: {header: x-tenant}\n    request: {path: /a}\n    expect: {status: 404}\n";
    std::fs::write(project.join("tests.yaml"), format!("{tests}{wrong}")).unwrap();
    let (ok, printed, text) = step("plugin test (a failing case)", &["plugin", "test"], &project);
    assert!(!ok, "{text}");
    assert!(
        printed.contains("case wrong on purpose ... FAILED\n    status: expected 404, got 400"),
        "{printed}"
    );
    assert!(printed.contains("3 passed, 1 failed"), "{printed}");

    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config).unwrap();
    let started = std::time::Instant::now();
    let mut run = in_empty_home(Command::new(dir.join("wasmgate")), &dir, &dir.join("home"));
    run.args(["run", "-c"]).arg(&file);
    let gw = Gateway::launch(run, dir.clone(), file)
        .unwrap_or_else(|e| panic!("the printed config:\n{config}\n{e}"));
    eprintln!("walkthrough: serving took {:.1} s", started.elapsed().as_secs_f64());
    let c = HttpClient::default();
    let r = c.get(&gw.url("/orders"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "TENANT_CHECK.0001"));
    let r = c.get(&gw.url("/orders"), &[("x-tenant", "acme")]).await;
    assert_eq!(
        (r.status, r.header("x-checked-by"), &r.body[..]),
        (200, Some("tenant-check"), &b"passed tenant-check"[..])
    );
    // `--precompile` filled the cache this start read.
    assert!(
        gw.log().contains("tenant_check.wasm kb=") && gw.log().contains("precompiled=true"),
        "{}",
        gw.log()
    );
}

/// The Debian package: built by scripts/package-deb from this build's binary, installed with
/// dpkg, and its unit's command run as the unit would run it (its user, its environment; no
/// systemd here): the sample config serves, plugins compile into the package's cache folder.
/// Then purged. Needs root, as dpkg does (CI and the developers' machines are root).
#[tokio::test(flavor = "multi_thread")]
async fn the_debian_package_installs_and_its_unit_serves() {
    let dir = common::temp_dir();
    let script = common::repo_root().join("scripts/package-deb");
    let out = Command::new(&script)
        .args(["--binary", env!("CARGO_BIN_EXE_wasmgate"), "--compress", "none", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg").args(args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let _ = dpkg(&["--purge", "wasmgate"]); // a run that stopped half-way
    let (ok, text) = dpkg(&["-i", &deb]);
    assert!(ok, "dpkg -i {deb}:\n{text}");
    let installed = Installed; // purged however this test ends

    let unit = std::fs::read_to_string("/lib/systemd/system/wasmgate.service").unwrap();
    let verify =
        Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/wasmgate.service"]).output();
    if let Ok(v) = verify {
        assert!(v.status.success(), "systemd-analyze verify:\n{}", String::from_utf8_lossy(&v.stderr));
    }
    let setting = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
    };
    let user = setting("User").pop().expect("the unit names its user");
    let exec: Vec<String> =
        setting("ExecStart").pop().unwrap().split_whitespace().map(str::to_string).collect();
    assert_eq!(exec[..2], ["/usr/bin/wasmgate".to_string(), "run".into()]);
    let meta = |p: &str| std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    use std::os::unix::fs::MetadataExt;
    let uid = meta("/var/cache/wasmgate").uid();
    assert_ne!(uid, 0, "the cache belongs to the service's user");
    assert_eq!(meta("/var/lib/wasmgate").uid(), uid);
    assert_eq!(meta("/etc/wasmgate/wasmgate.yaml").mode() & 0o777, 0o640, "the config may hold secrets");

    // As systemd would start it: the unit's user, only the unit's environment.
    let mut run = Command::new("setpriv");
    run.args(["--reuid", &user, "--regid", &user, "--init-groups", "--"])
        .args(&exec)
        .env_clear()
        .current_dir("/");
    for e in setting("Environment") {
        let (k, v) = e.split_once('=').unwrap();
        run.env(k, v);
    }
    let config = PathBuf::from("/etc/wasmgate/wasmgate.yaml");
    std::fs::create_dir_all(dir.join("gateway")).unwrap();
    let gw = Gateway::launch(run, dir.join("gateway"), config)
        .unwrap_or_else(|e| panic!("the unit's command:\n{e}"));
    assert_eq!(gw.addr.to_string(), "127.0.0.1:8080", "the sample config's listener");
    let r = HttpClient::default().get(&gw.url("/wasmgate/health"), &[]).await;
    assert_eq!((r.status, &r.body[..], r.header("x-served-by")), (200, &b"ok"[..], Some("wasmgate")));
    let cached = std::fs::read_dir("/var/cache/wasmgate").unwrap().count();
    assert_eq!(cached, 1, "response-headers, compiled into the package's cache folder");
    drop(gw);
    drop(installed);
    assert!(!Path::new("/usr/bin/wasmgate").exists() && !Path::new("/var/cache/wasmgate").exists());
}

/// Purges the package when dropped, so a failed run leaves no package behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "wasmgate"]).output();
    }
}

/// The container recipe cannot be built here (no container engine, no image registry), so
/// what can go wrong with it unseen is checked: every file it copies exists, its listener
/// rewrite still matches the sample config, and it runs as the unit does (same folders,
/// non-root).
#[test]
fn the_container_recipe_agrees_with_the_package() {
    let root = common::repo_root();
    let recipe = std::fs::read_to_string(root.join("host/wasmgate/dist/Containerfile")).unwrap();
    for line in recipe.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let source = line.split_whitespace().nth(1).unwrap();
        assert!(root.join(source).exists(), "{line}: no {source}");
    }
    let config = std::fs::read_to_string(root.join("host/wasmgate/dist/wasmgate.yaml")).unwrap();
    let rewrite = recipe.lines().find_map(|l| l.split_once("sed -i 's/")).expect("the listener rewrite").1;
    let (from, _) = rewrite.split_once('/').unwrap();
    assert!(config.contains(from), "the recipe rewrites `{from}`, which the sample config no longer has");
    let unit = std::fs::read_to_string(root.join("host/wasmgate/dist/wasmgate.service")).unwrap();
    for env in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        assert!(recipe.contains(env), "the unit sets {env}; the image does not");
    }
    assert!(recipe.contains("\nUSER wasmgate\n"), "the image runs as root");
}
