//! The lab for the contract's request shape (bench/lab/wit/lab.wit): one CORS-like policy
//! called with the request (A) as today's record, every string lowered by its own `realloc`
//! into the guest, (B) packed into one buffer the guest reads in place, (C) as a host resource
//! whose getters the guest calls for what it reads. Each shape is measured warm (a tight loop,
//! as criterion does) and cold (2 MiB of other data touched before every call, as the rest of
//! a request does to the caches in the gateway), with the engine set up as the runtime's
//! (pooling allocator, epoch deadlines). `cargo bench -p wasmgate-bench --bench lab`, after
//! scripts/build-plugins.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

mod lab {
    wasmtime::component::bindgen!({
        path: "lab/wit",
        world: "lab",
        ownership: Borrowing { duplicate_if_necessary: true },
        with: { "wasmgate:lab/types.request-handle": super::RequestHandle },
    });
}

use lab::exports::wasmgate::lab::policy::Guest as Policy;
use lab::wasmgate::lab::types::{Action, Request};

/// The host side of a request handle: the request is the store's current one.
pub struct RequestHandle;

const HEADERS: [(&str, &str); 5] = [
    ("host", "api.example.com"),
    ("user-agent", "bench/1.0"),
    ("accept", "*/*"),
    ("origin", "https://app.example.com"),
    ("x-request-id", "0123456789abcdef0123456789abcdef"),
];

struct State {
    wasi: wasmtime_wasi::WasiCtx,
    table: ResourceTable,
    /// The current request, for the handle's getters.
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

impl lab::wasmgate::lab::types::Host for State {}

// The guest's standard library imports WASI (unused by the policy), as plugins' does.
impl wasmtime_wasi::WasiView for State {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl lab::wasmgate::lab::types::HostRequestHandle for State {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.method.into()
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.path.into()
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).into())
    }

    fn drop(&mut self, handle: Resource<RequestHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// (B)'s encoding: `u16` little-endian lengths, then bytes.
fn pack(out: &mut Vec<u8>, method: &str, path: &str, headers: &[(&str, &str)]) {
    fn put(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.clear();
    put(out, method);
    put(out, path);
    out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for (n, v) in headers {
        put(out, n);
        put(out, v);
    }
}

fn engine() -> Engine {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_backtrace_max_frames(None);
    let mut pooling = PoolingAllocationConfig::new();
    pooling.total_component_instances(10).total_memories(10).total_tables(20).max_memory_size(16 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).expect("engine")
}

fn allowed(action: Action) {
    assert!(matches!(action, Action::Continue(ref ops) if ops.len() == 2), "the policy allows the sample");
}

fn bench(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/plugin/wasmgate_lab_guest.wasm");
    let engine = engine();
    let component = Component::from_file(&engine, &path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins)", path.display()));
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("links WASI");
    lab::Lab::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).expect("links");
    let state = State {
        wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
        table: ResourceTable::new(),
        method: "GET",
        path: "/users/42",
        headers: &HEADERS,
    };
    let mut store = Store::new(&engine, state);
    store.set_epoch_deadline(1 << 30);
    let instance = lab::Lab::instantiate(&mut store, &component, &linker).expect("instantiates");
    let policy: &Policy = instance.wasmgate_lab_policy();
    let origin_only = [HEADERS[3]];
    let mut buf = Vec::with_capacity(256);
    let mut cold = common::ColdCaches::new();

    // Each shape as one closure over the store, so warm and cold run the same code.
    type Call<'a> = Box<dyn FnMut(&mut Store<State>) -> Action + 'a>;
    let shapes: Vec<(&str, Call)> = vec![
        (
            "A record, 1 header selected",
            Box::new(|s| {
                let r = Request { method: "GET", path: "/users/42", headers: &origin_only };
                policy.call_on_request_record(s, r).unwrap()
            }),
        ),
        (
            "A record, 5 headers",
            Box::new(|s| {
                let r = Request { method: "GET", path: "/users/42", headers: &HEADERS };
                policy.call_on_request_record(s, r).unwrap()
            }),
        ),
        (
            "B packed, 5 headers",
            Box::new(move |s| {
                pack(&mut buf, "GET", "/users/42", &HEADERS);
                policy.call_on_request_packed(s, &buf).unwrap()
            }),
        ),
        (
            "C handle, 3 getters",
            Box::new(|s| {
                let handle = s.data_mut().table.push(RequestHandle).unwrap();
                let borrowed = Resource::<RequestHandle>::new_borrow(handle.rep());
                let action = policy.call_on_request_handle(&mut *s, borrowed).unwrap();
                s.data_mut().table.delete(handle).unwrap();
                action
            }),
        ),
    ];
    let mut g = c.benchmark_group("request shape");
    for (name, mut call) in shapes {
        allowed(call(&mut store));
        g.bench_function(format!("{name}, warm"), |b| b.iter(|| black_box(call(&mut store))));
        g.bench_function(format!("{name}, cold"), |b| cold.time(b, || call(&mut store)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
