//! Plugin developers' tools end to end: the A/B router example written in Rust, Python and
//! JavaScript passes one test through a real gateway; `wasmgate plugin new`, `build`, the
//! template's own tests and serving the result; `wasmgate plugin inspect`.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The example in each language: built by scripts/build-plugins (Rust) and
/// scripts/build-sdk-examples (Python, JavaScript).
fn ab_router(language: &str) -> PathBuf {
    let path = match language {
        "rust" => plugin_dir().join("ab_router.wasm"),
        "python" => repo_root().join("target/sdk/ab-router-py.wasm"),
        "javascript" => repo_root().join("target/sdk/ab-router-js.wasm"),
        _ => unreachable!(),
    };
    assert!(path.exists(), "{} is not built: run scripts/test", path.display());
    path
}

fn ab_config(component: &std::path::Path, beta: &Upstream) -> String {
    format!(
        r#"
plugins:
  ab-router: {{path: "{}", grants: {{backends: ["{beta}"]}}}}
groups:
  - id: g
    apis:
      - id: shop
        path: /shop
        match: prefix
        backend: {{mock: {{status: 200, body: "stable"}}}}
        policies:
          - plugin: ab-router
            config: {{header: x-group, variants: {{beta: "{beta}"}}}}
"#,
        component.display(),
        beta = beta.url()
    )
}

async fn routes_by_header(language: &str) {
    let beta = Upstream::start().await;
    // Default limits (16 MiB per instance) for every language.
    let gw = Gateway::start(&ab_config(&ab_router(language), &beta));
    let c = HttpClient::default();
    for n in 1..=3 {
        let r = c.send("GET", &gw.url("/shop/cart"), &[("x-group", "beta")], "").await;
        assert_eq!(r.status, 200, "{language}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["path"], "/shop/cart", "{language}: served by the beta backend");
        assert_eq!(r.header("x-ab-variant"), Some("beta"), "{language}");
        assert_eq!(r.header("x-ab-count"), Some(n.to_string().as_str()), "{language}: a host counter");
    }
    assert_eq!(beta.hits(), 3);
    for asked in [None, Some("gamma")] {
        let headers: Vec<(&str, &str)> = asked.map(|v| ("x-group", v)).into_iter().collect();
        let r = c.send("GET", &gw.url("/shop/cart"), &headers, "").await;
        assert_eq!((r.status, r.body.as_ref()), (200, b"stable".as_ref()), "{language}");
        assert_eq!(r.header("x-ab-variant"), Some("default"), "{language}");
    }
    assert_eq!(beta.hits(), 3, "{language}: only the named variant goes to beta");

    // A config the plugin's schema refuses never reaches the plugin; one only the plugin's
    // own check refuses is reported the same way.
    let bad = ab_config(&ab_router(language), &beta);
    let (ok, text) = validate(&bad.replace(&format!("beta: \"{}\"", beta.url()), "beta: \"ftp://nowhere\""));
    assert!(
        !ok && text.contains("config.variants.beta: ") && text.contains("the plugin's config schema"),
        "{language}: {text}"
    );
    let (ok, text) = validate(&bad.replace("variants: {beta:", "variants: {default:"));
    assert!(
        !ok && text.contains("config.variants.default: `default` names the API's own backend"),
        "{language}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ab_router_in_rust() {
    routes_by_header("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ab_router_in_python() {
    routes_by_header("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ab_router_in_javascript() {
    routes_by_header("javascript").await;
}

/// `wasmgate plugin test` runs one test file against the Rust, Python and JavaScript twins of
/// the A/B router: the declarative runner works for any language's component.
#[test]
fn the_ab_routers_pass_the_same_test_file() {
    let tests = repo_root().join("sdk/examples/ab-router/tests.yaml");
    let cache = temp_dir();
    for language in ["rust", "python", "javascript"] {
        let out = wasmgate()
            .args(["plugin", "test"])
            .arg(&tests)
            .arg("--component")
            .arg(ab_router(language))
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("3 passed, 0 failed"),
            "{language}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn inspect_says_what_each_component_is() {
    for (language, name) in
        [("rust", "ab-router"), ("python", "ab-router-py"), ("javascript", "ab-router-js")]
    {
        let out = wasmgate().args(["plugin", "inspect"]).arg(ab_router(language)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        for line in [
            format!("name:         {name}\n"),
            "version:      0.1.0\n".into(),
            format!("language:     {language}\n"),
            "contract:     wasmgate:plugin@0.2.1 (this gateway runs it)\n".into(),
            "capabilities: log, counters\n".into(),
            "\"pattern\": \"^https?://\"".into(),
        ] {
            assert!(text.contains(&line), "{language}: no {line:?} in\n{text}");
        }
    }
    let out = wasmgate().args(["plugin", "inspect"]).arg(repo_root().join("Cargo.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly component"));
}

/// A project made from a checkout: the Rust harness's tests (`cargo test`) run, and reuse the
/// runtime the checkout compiled. (tests/install.rs walks through docs/plugins.md with only the
/// binary.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_is_created_tested_and_served() {
    let dir = temp_dir().join("tenant-check");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{cmd:?} failed:\n{text}");
        text
    };
    run(wasmgate()
        .args(["plugin", "new", "tenant-check", "--checkout"])
        .arg(repo_root())
        .arg("--dir")
        .arg(&dir));
    let built = run(wasmgate().args(["plugin", "build"]).arg(&dir));
    assert!(built.contains("tenant-check 0.1.0 (rust), built against wasmgate:plugin@0.2.1"), "{built}");
    // The path the build printed, as an operator would copy it.
    let component = built.lines().find_map(|l| l.strip_prefix("  tenant-check: {path: '")).unwrap();
    let component = component.trim_end_matches("'}").to_string();

    // The template's own tests, with the harness.
    let tested = run(Command::new(env!("CARGO")).arg("test").current_dir(&dir));
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    // It reuses the runtime this checkout compiled: a second wasmtime would cost minutes and
    // a gigabyte of disk (sdk/testing/Cargo.toml aligns the features of the two graphs).
    assert!(
        !tested.contains("Compiling wasmtime "),
        "the plugin project compiled wasmtime again: its dependency graph no longer resolves \
         the features the workspace does (sdk/testing/Cargo.toml)\n{tested}"
    );

    let gw = Gateway::start(&format!(
        "plugins:\n  tenant-check: {{path: \"{component}\"}}\n{}",
        one_binding("tenant-check", "{header: x-tenant, status: 401}")
    ));
    let c = HttpClient::default();
    let r = c.send("GET", &gw.url("/a"), &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "TENANT_CHECK.0001"));
    let r = c.send("GET", &gw.url("/a"), &[("x-tenant", "acme")], "").await;
    assert_eq!((r.status, r.header("x-checked-by")), (200, Some("tenant-check")));
}

/// The Rust example with its contract version rewritten (the names are the only place it
/// is written), as if built against another version of `wit/`.
fn built_for(version: &str) -> PathBuf {
    assert_eq!(version.len(), "0.2.1".len(), "same length, so the binary stays valid");
    let bytes = std::fs::read(ab_router("rust")).unwrap();
    let (from, to) = (b"@0.2.1".as_slice(), format!("@{version}").into_bytes());
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes.as_slice();
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(&to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    assert_ne!(out, bytes);
    let path = temp_dir().join(format!("ab-router-{version}.wasm"));
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test]
async fn plugins_built_for_0_2_x_run_and_others_are_refused_by_name() {
    let beta = Upstream::start().await;
    let (ok, text) = validate(&ab_config(&built_for("0.2.7"), &beta));
    assert!(ok, "a later patch level of the contract runs: {text}");
    let (ok, text) = validate(&ab_config(&built_for("0.2.0"), &beta));
    assert!(ok, "an earlier patch level runs: {text}");
    for other in ["0.1.0", "0.3.0"] {
        let (ok, text) = validate(&ab_config(&built_for(other), &beta));
        assert!(
            !ok && text.contains(&format!(
                "built against wasmgate:plugin@{other}; this gateway runs plugins built against 0.2.x: rebuild it"
            )),
            "{text}"
        );
    }
    let older = built_for("0.1.0");
    let out = wasmgate().args(["plugin", "inspect"]).arg(&older).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("(this gateway does not run it: built against"));
}
