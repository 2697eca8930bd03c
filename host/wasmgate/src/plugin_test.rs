//! `wasmgate plugin test`: a plugin's test cases, from a declarative file, run by this
//! binary's own runtime (so a plugin author never compiles wasmtime). Each case binds the
//! plugin with a config (schema, then `configure`), sends requests through the phases the
//! binding implements, with the capabilities' fakes the case sets (clock, outbound answers,
//! credentials; log sinks are captured), and compares what happened with what it expects.
//! The file's format is documented in docs/plugins.md.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmgate_test::{Binding, Plugin, Reply, RequestAction, ResponseAction, TestRequest, TestResponse};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The component to test, relative to the file; default: the project the file is in,
    /// built first.
    pub plugin: Option<PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    name: String,
    /// The binding's config, as under `policies[].config`.
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    #[serde(default)]
    fakes: Fakes,
    /// The config must be refused, with an error containing this.
    config_error: Option<String>,
    /// One request, written in the case itself (its `response` and `expect` beside it)...
    request: Option<StepRequest>,
    response: Option<StepResponse>,
    expect: Option<Expect>,
    /// ...or several, run in order on the same binding (counters, kv and the clock carry on).
    #[serde(default)]
    steps: Vec<Step>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Fakes {
    /// The plugin's clock, stopped at this time (ms since the Unix epoch); else the wall clock.
    now_ms: Option<u64>,
    /// Answers to outbound HTTP calls: the first whose `url` starts the request's URL.
    #[serde(default)]
    outbound: Vec<OutboundAnswer>,
    /// Apps the `credentials` capability knows, authorised for the API under test.
    #[serde(default)]
    credentials: Vec<FakeApp>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct OutboundAnswer {
    url: String,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    /// The connection fails with this message instead.
    error: Option<String>,
}

fn ok() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeApp {
    id: String,
    key: String,
    secret: String,
    app_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    request: StepRequest,
    /// The backend's response, for the response and log phases (default: 200, no body).
    response: Option<StepResponse>,
    /// Move the stopped clock on before this step.
    advance_ms: Option<u64>,
    /// Send the request this many times; the expectation is checked on the last.
    #[serde(default = "once")]
    repeat: u32,
    #[serde(default)]
    expect: Expect,
}

/// A field given, even as `null` (which a plain `Option` cannot tell from one left out).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn once() -> u32 {
    1
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct StepRequest {
    #[serde(default = "get")]
    method: String,
    #[serde(default = "root")]
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    client_ip: Option<String>,
    /// The app an earlier policy authenticated (as app authentication sets it).
    app: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct StepResponse {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    /// The backend did not answer in time.
    #[serde(default)]
    timed_out: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// What the request phase did: `continue` or `respond`.
    action: Option<Action>,
    /// The status the client gets: the plugin's reply's, or the response's after the
    /// response phase.
    status: Option<u16>,
    /// Headers the client gets as the plugin left them (`null`: absent).
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    /// Headers the backend gets as the plugin left them (`null`: absent).
    #[serde(default)]
    request_headers: BTreeMap<String, Option<String>>,
    /// The backend the plugin sends the request to instead of the API's (`null`: the API's).
    #[serde(default, deserialize_with = "present")]
    backend: Option<Option<String>>,
    /// The reply's body contains this.
    body_contains: Option<String>,
    /// What the plugin published to its log sinks in this step, in order.
    log: Option<Vec<LogRecord>>,
    /// A phase call fails (trap, deadline, memory), with an error containing this.
    error: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Action {
    Continue,
    Respond,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct LogRecord {
    topic: Option<String>,
    /// The record's payload contains this.
    contains: Option<String>,
}

/// Where the test file and the component are: `path` is a test file, or a project folder
/// with `tests.yaml`; `component` overrides the file's `plugin`.
pub fn run(path: &Path, component: Option<&Path>) -> Result<()> {
    let file = if path.is_dir() { path.join("tests.yaml") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let tests: TestFile = serde_norway::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let component = match (component, &tests.plugin) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(p)) => base.join(p),
        (None, None) => {
            wasmgate_test::try_build(&base.to_string_lossy(), "release").map_err(anyhow::Error::msg)?
        }
    };
    let plugin =
        Plugin::try_load_cached(&component, crate::default_cache_dir()).map_err(anyhow::Error::msg)?;
    let outbound: Arc<Mutex<Vec<OutboundAnswer>>> = Arc::default();
    let answers = outbound.clone();
    plugin
        .answer_outbound(move |request| answer(&answers.lock().unwrap_or_else(|e| e.into_inner()), request));

    println!("running {} cases from {} on {}", tests.cases.len(), file.display(), component.display());
    let mut failed = 0;
    for case in &tests.cases {
        *outbound.lock().unwrap_or_else(|e| e.into_inner()) = case.fakes.outbound.clone();
        match run_case(&plugin, case) {
            Ok(()) => println!("case {} ... ok", case.name),
            Err(e) => {
                println!("case {} ... FAILED\n    {e:#}", case.name);
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", tests.cases.len() - failed);
    if failed > 0 {
        bail!("{failed} of {} cases failed", tests.cases.len());
    }
    Ok(())
}

fn answer(
    answers: &[OutboundAnswer],
    request: http::Request<bytes::Bytes>,
) -> Result<http::Response<bytes::Bytes>, String> {
    let url = request.uri().to_string();
    let a = answers
        .iter()
        .find(|a| url.starts_with(&a.url))
        .ok_or_else(|| format!("no fakes.outbound answer for {url}"))?;
    if let Some(e) = &a.error {
        return Err(e.clone());
    }
    let mut response = http::Response::builder().status(a.status);
    for (n, v) in &a.headers {
        response = response.header(n, v);
    }
    response.body(bytes::Bytes::from(a.body.clone())).map_err(|e| e.to_string())
}

fn run_case(plugin: &Plugin, case: &Case) -> Result<()> {
    match case.fakes.now_ms {
        Some(ms) => plugin.set_now_ms(ms),
        None => plugin.run_clock(),
    }
    let apps: Vec<(&str, &str, &str, Option<&str>)> = case
        .fakes
        .credentials
        .iter()
        .map(|a| (a.id.as_str(), a.key.as_str(), a.secret.as_str(), a.app_code.as_deref()))
        .collect();
    plugin.set_credentials(&apps);

    let binding = match (plugin.bind(case.config.clone()), &case.config_error) {
        (Ok(_), Some(expected)) => bail!("the config was accepted; expected it refused with `{expected}`"),
        (Err(e), Some(expected)) if e.contains(expected.as_str()) => return Ok(()),
        (Err(e), Some(expected)) => bail!("the config was refused with `{e}`; expected `{expected}`"),
        (Err(e), None) => bail!("the config was refused: {e}"),
        (Ok(b), None) => b,
    };
    let single = match (&case.request, &case.response, &case.expect) {
        (Some(request), response, expect) => Some(Step {
            request: request.clone(),
            response: response.clone(),
            advance_ms: None,
            repeat: 1,
            expect: expect.clone().unwrap_or_default(),
        }),
        (None, None, None) => None,
        (None, ..) => bail!("`response` and `expect` need a `request` beside them"),
    };
    let steps: Vec<&Step> = single.iter().chain(&case.steps).collect();
    if steps.is_empty() {
        bail!("no request: give the case `request` and `expect`, or `steps`");
    }
    for (i, step) in steps.iter().enumerate() {
        if let Some(ms) = step.advance_ms {
            plugin.advance(Duration::from_millis(ms));
        }
        let mut outcome = None;
        for _ in 0..step.repeat.max(1) {
            plugin.published(); // only the last send's records are checked
            outcome = Some(send(&binding, step));
        }
        let outcome = outcome.expect("sent at least once");
        let checked = check(&step.expect, outcome, plugin);
        if steps.len() > 1 {
            checked.with_context(|| format!("step {}", i + 1))?;
        } else {
            checked?;
        }
    }
    Ok(())
}

/// What a request did, as the client and the backend saw it.
struct Outcome {
    action: Action,
    status: u16,
    /// The client's headers as the plugin left them.
    headers: http::HeaderMap,
    /// The backend's request headers as the plugin left them.
    request_headers: http::HeaderMap,
    /// The backend the plugin chose instead of the API's.
    backend: Option<String>,
    body: bytes::Bytes,
}

fn send(binding: &Binding<'_>, step: &Step) -> Result<Outcome, String> {
    let mut request = test_request(&step.request)?;
    let response = test_response(step.response.as_ref())?;
    let phases = binding.info().phases;
    let failed = |e: wasmgate_test::PolicyError| e.to_string();
    let mut out = Outcome {
        action: Action::Continue,
        status: response.status.as_u16(),
        headers: response.headers.clone(),
        request_headers: request.headers.clone(),
        backend: None,
        body: response.body.clone().unwrap_or_default(),
    };
    if phases.request {
        match binding.on_request(&request).map_err(failed)? {
            RequestAction::Respond(Reply { status, headers, body }) => {
                // No backend and no response phase; the log phase sees the reply.
                out.action = Action::Respond;
                out.status = status.as_u16();
                out.headers = headers.into_iter().collect();
                out.body = body;
                if phases.log {
                    let mut reply = TestResponse::try_new(out.status)?;
                    reply.headers = out.headers.clone();
                    reply.body = Some(out.body.clone());
                    binding.on_log(&request, &reply).map_err(failed)?;
                }
                return Ok(out);
            }
            RequestAction::Continue(changes) => {
                request.apply(&changes);
                out.request_headers = request.headers.clone();
                out.backend = changes.backend.as_ref().map(|b| b.url.clone());
                for op in changes.response_headers.iter().cloned() {
                    op.apply(&mut out.headers);
                }
            }
        }
    }
    if phases.response {
        match binding.on_response(&request, &response).map_err(failed)? {
            ResponseAction::Replace(Reply { status, headers, body }) => {
                out.status = status.as_u16();
                out.headers = headers.into_iter().collect();
                out.body = body;
            }
            ResponseAction::Continue(changes) => {
                if let Some(s) = changes.status {
                    out.status = s.as_u16();
                }
                for op in changes.headers {
                    op.apply(&mut out.headers);
                }
            }
        }
    }
    if phases.log {
        binding.on_log(&request, &response).map_err(failed)?;
    }
    Ok(out)
}

fn test_request(r: &StepRequest) -> Result<TestRequest, String> {
    let method = http::Method::from_bytes(r.method.as_bytes())
        .map_err(|_| format!("request.method `{}`", r.method))?;
    let mut t = TestRequest::new(method, &r.path);
    for (n, v) in &r.headers {
        t = t.try_header(n, v).map_err(|e| format!("request.headers.{n}: {e}"))?;
    }
    t.body = r.body.clone().map(Into::into);
    if let Some(ip) = &r.client_ip {
        t.client_ip = ip.parse().map_err(|_| format!("request.client_ip `{ip}` is not an IP address"))?;
    }
    if let Some(app) = &r.app {
        t = t.app_id(app);
    }
    Ok(t)
}

fn test_response(r: Option<&StepResponse>) -> Result<TestResponse, String> {
    let Some(r) = r else { return Ok(TestResponse::new(200)) };
    let mut t = if r.timed_out { TestResponse::timed_out() } else { TestResponse::try_new(r.status)? };
    for (n, v) in &r.headers {
        t = t.try_header(n, v).map_err(|e| format!("response.headers.{n}: {e}"))?;
    }
    t.body = r.body.clone().map(Into::into);
    Ok(t)
}

fn check(expect: &Expect, outcome: Result<Outcome, String>, plugin: &Plugin) -> Result<()> {
    let out = match (outcome, &expect.error) {
        (Err(e), Some(want)) if e.contains(want.as_str()) => return Ok(()),
        (Err(e), Some(want)) => bail!("the call failed with `{e}`; expected `{want}`"),
        (Err(e), None) => bail!("the call failed: {e}"),
        (Ok(_), Some(want)) => bail!("the call succeeded; expected it to fail with `{want}`"),
        (Ok(out), None) => out,
    };
    if let Some(action) = expect.action
        && action != out.action
    {
        let body = String::from_utf8_lossy(&out.body);
        bail!("action: expected {action:?}, got {:?} (status {}, body {body:?})", out.action, out.status);
    }
    if let Some(status) = expect.status
        && status != out.status
    {
        bail!(
            "status: expected {status}, got {} (body {:?})",
            out.status,
            String::from_utf8_lossy(&out.body)
        );
    }
    if let Some(backend) = &expect.backend
        && *backend != out.backend
    {
        bail!(
            "backend: expected {}, got {}",
            backend.as_deref().unwrap_or("the API's"),
            out.backend.as_deref().unwrap_or("the API's")
        );
    }
    headers("headers", &expect.headers, &out.headers)?;
    headers("request_headers", &expect.request_headers, &out.request_headers)?;
    if let Some(want) = &expect.body_contains {
        let body = String::from_utf8_lossy(&out.body);
        if !body.contains(want.as_str()) {
            bail!("body: expected it to contain {want:?}, got {body:?}");
        }
    }
    if let Some(want) = &expect.log {
        let got = plugin.published();
        if got.len() != want.len() {
            bail!("log: expected {} records, got {}", want.len(), got.len());
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let payload = String::from_utf8_lossy(&g.payload);
            if w.topic.as_ref().is_some_and(|t| *t != g.topic) {
                bail!(
                    "log[{i}]: expected topic {:?}, got {:?}",
                    w.topic.as_deref().unwrap_or_default(),
                    g.topic
                );
            }
            if w.contains.as_ref().is_some_and(|c| !payload.contains(c.as_str())) {
                bail!(
                    "log[{i}]: expected the record to contain {:?}, got {payload:?}",
                    w.contains.as_deref().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn headers(what: &str, want: &BTreeMap<String, Option<String>>, got: &http::HeaderMap) -> Result<()> {
    for (name, value) in want {
        let actual: Vec<&str> =
            got.get_all(name.to_ascii_lowercase()).iter().filter_map(|v| v.to_str().ok()).collect();
        let actual = (!actual.is_empty()).then(|| actual.join(", "));
        if actual != *value {
            bail!("{what}.{name}: expected {}, got {}", shown(value.as_deref()), shown(actual.as_deref()));
        }
    }
    Ok(())
}

fn shown(v: Option<&str>) -> String {
    v.map_or_else(|| "no such header".into(), |v| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use super::TestFile;

    /// docs/plugins.md's example file is one this runner reads.
    #[test]
    fn the_documented_test_file_parses() {
        let docs = include_str!("../../../docs/plugins.md");
        let section = docs.split_once("### Test cases").expect("the section").1;
        let example = section.split_once("```yaml\n").expect("an example").1.split_once("```").unwrap().0;
        let file: TestFile = serde_norway::from_str(example).unwrap();
        assert_eq!(file.cases.len(), 3);
        assert_eq!(file.cases[2].steps.len(), 3);
        let template = include_str!("../templates/plugin/tests.yaml.tmpl").replace("{{name}}", "p");
        let file: TestFile = serde_norway::from_str(&template).unwrap();
        assert_eq!(file.cases.len(), 3);
    }
}
