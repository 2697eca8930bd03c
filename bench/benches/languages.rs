//! What a plugin costs by the language it is written in: the same A/B router (sdk/examples,
//! sdk/python, sdk/js) called warm through the gateway's runtime, instantiated fresh, and
//! compiled versus loaded precompiled. `cargo bench -p wasmgate-bench --bench languages`
//! after scripts/build-plugins and scripts/build-sdk-examples.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;
use wasmgate_proxy::policy::{Policy, RequestAction};
use wasmgate_runtime::PluginRuntime;

fn component(language: &str) -> PathBuf {
    let target = wasmgate_bench::plugin_dir().join("../..");
    match language {
        "rust" => wasmgate_bench::plugin_dir().join("ab_router.wasm"),
        "python" => target.join("sdk/ab-router-py.wasm"),
        _ => target.join("sdk/ab-router-js.wasm"),
    }
}

fn bench(c: &mut Criterion) {
    let sample = wasmgate_bench::SampleRequest::new(&[
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("x-group", "beta"),
    ]);
    let request = sample.view();
    let config = r#"{"header":"x-group","variants":{"beta":"http://10.0.0.2:8080"}}"#;
    // Run as a benchmark (`cargo bench`), compile each component into a fresh cache and time
    // it; run once as a test (`cargo test --all-targets`), share the test suite's cache, so
    // the large Python and JS components are compiled once per suite.
    let measuring = std::env::args().any(|a| a == "--bench");
    let cache = match measuring {
        true => std::env::temp_dir().join(format!("wasmgate-bench-languages-{}", std::process::id())),
        false => wasmgate_bench::plugin_dir().join("../../test-plugin-cache"),
    };
    for language in ["rust", "python", "javascript"] {
        let path = component(language);
        // Compiled once, then what every later start pays: loading the precompiled file.
        let started = Instant::now();
        PluginRuntime::new(Some(cache.clone())).unwrap().load(&path).expect("built: see the module doc");
        let compiled = started.elapsed();
        let started = Instant::now();
        let runtime = PluginRuntime::new(Some(cache.clone())).unwrap();
        runtime.load(&path).unwrap();
        let precompiled = started.elapsed();
        let size = std::fs::metadata(&path).unwrap().len();
        if measuring {
            println!(
                "{language}: {:.1} MB component, compiled in {compiled:.2?}, loaded precompiled in {precompiled:.2?}",
                size as f64 / 1e6
            );
        }

        let router =
            wasmgate_bench::bindings_of(&runtime, &path, "ab-router", config, 1, 64 << 20).pop().unwrap();
        let call =
            || router.on_request(black_box(&request)).now_or_never().expect("ready").expect("succeeds");
        assert!(
            matches!(call(), RequestAction::Continue(c) if c.backend.is_some()),
            "{language}: routed to beta"
        );
        let mut g = c.benchmark_group(language);
        g.bench_function("warm on_request (one counter import)", |b| b.iter(|| black_box(call())));
        g.bench_function("fresh instance", |b| b.iter(|| router.instantiate_fresh().unwrap()));
        g.finish();
    }
    if measuring {
        let _ = std::fs::remove_dir_all(&cache);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
