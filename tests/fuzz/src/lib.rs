//! Fuzz targets: what the gateway reads from clients (the request path through routing and
//! parameter checks; SDK-HMAC signatures), operators (config files, OpenAPI documents) and
//! plugins (header changes at the WIT boundary). Each takes arbitrary bytes and must neither
//! panic nor break the invariant it states. The binaries in `src/bin` run them under AFL++;
//! `tests/smoke.rs` runs them over the corpus in `corpus/` and its mutations (CI's smoke).
//! docs/SECURITY.md has the commands and the last run's figures.
#![forbid(unsafe_code)]

use http::{HeaderMap, Method, Uri};
use std::path::Path;
use std::sync::OnceLock;
use wasmgate_apig_signature as sig;
use wasmgate_proxy::params::{Location, ParamRule, ParamType, RequestParams};
use wasmgate_proxy::path::{EncodedSlashes, normalize};
use wasmgate_proxy::router::Router;

/// Lines of `data` (lossy UTF-8): the targets' inputs are small line-based records, which
/// keeps corpus files readable and lets AFL's mutations move field boundaries.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut out: Vec<String> = text.splitn(n, '\n').map(str::to_string).collect();
    out.resize(n, String::new());
    out
}

struct Routes {
    router: Router<&'static str>,
    rules: Vec<ParamRule>,
}

/// (domains, methods, path, prefix match, API id)
type RouteRow = (&'static [&'static str], Option<Vec<Method>>, &'static str, bool, &'static str);

fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut router = Router::new();
        let get = Some(vec![Method::GET]);
        let table: [RouteRow; 7] = [
            (&[], None, "/", false, "root"),
            (&[], get.clone(), "/users/{id}", false, "user"),
            (&[], None, "/users/{id}/orders/{order}", false, "order"),
            (&[], None, "/files/{rest+}", false, "files"),
            (&[], None, "/demo", true, "demo"),
            (&["api.example.com"], None, "/users/{id}", false, "host-user"),
            (&["*"], Some(vec![Method::POST, Method::PUT]), "/users", false, "create"),
        ];
        for (hosts, methods, template, prefix, name) in table {
            router.insert(hosts, methods, template, prefix, name).expect("the fuzz routes do not clash");
        }
        let rule = |name: &str, location, kind, min, max, pattern: Option<&str>| ParamRule {
            name: name.into(),
            location,
            kind,
            required: false,
            default: Some("1".into()),
            allowed: Vec::new(),
            min,
            max,
            pattern: pattern.map(|p| regex::Regex::new(p).expect("a valid pattern")),
        };
        let rules = vec![
            rule("id", Location::Path, ParamType::Integer, Some(1.0), Some(1e9), None),
            rule("q", Location::Query, ParamType::String, None, Some(64.0), Some("^[a-z0-9 ]*$")),
            rule("limit", Location::Query, ParamType::Number, Some(0.0), Some(100.0), None),
            rule("x-flag", Location::Header, ParamType::Boolean, None, None, None),
        ];
        Routes { router, rules }
    })
}

/// `host \n method \n request-target \n header-line*`: the path normalised, routed and its
/// declared parameters checked, as the pipeline does before any policy runs. Invariant: a
/// normalised path has no dot-segments left.
pub fn request(data: &[u8]) {
    let f = fields(data, 4);
    let Ok(method) = Method::from_bytes(f[1].as_bytes()) else { return };
    // Only what hyper hands the pipeline: a target that parses as a URI.
    let Ok(uri) = f[2].parse::<Uri>() else { return };
    for slashes in [EncodedSlashes::Reject, EncodedSlashes::Keep] {
        let Ok(path) = normalize(uri.path(), slashes) else { continue };
        assert!(!path.split('/').any(|s| s == "." || s == ".."), "`{}` normalised to `{path}`", uri.path());
        let routes = routes();
        let Some(found) = routes.router.find(&f[0].to_ascii_lowercase(), &method, &path) else { continue };
        let mut headers = HeaderMap::new();
        for line in f[3].lines() {
            if let Some((n, v)) = line.split_once(':')
                && let (Ok(n), Ok(v)) = (n.parse::<http::HeaderName>(), v.trim().parse::<http::HeaderValue>())
            {
                headers.append(n, v);
            }
        }
        let mut path_params = found.params;
        let mut query = uri.query().unwrap_or("").to_string();
        let mut params = RequestParams { path: &mut path_params, query: &mut query, headers: &mut headers };
        let _ = params.validate(&routes.rules);
    }
}

/// A whole config document, parsed and validated as `wasmgate run` does before building.
pub fn config(data: &[u8]) {
    let _ = wasmgate_config::GatewayConfig::parse(&String::from_utf8_lossy(data), Path::new("fuzz.yaml"));
}

/// `method \n path \n query \n signed-headers \n header-lines \n body \n secret \n date \n
/// signature`: the canonical request and signature as app-auth computes them. Invariants: a
/// signature made with the secret verifies, and one that differs does not.
pub fn signature(data: &[u8]) {
    let f = fields(data, 9);
    let signed: Vec<&str> = f[3].split(';').collect();
    let headers: Vec<(String, String)> = f[4]
        .split('\r')
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let body_hash = sig::sha256_hex(&sig::Native, f[5].as_bytes());
    let _ = sig::parse_sdk_date(&f[7]);
    let Some(canonical) = sig::canonical_request(&f[0], &f[1], &f[2], &signed, header, &body_hash) else {
        return;
    };
    let to_sign = sig::string_to_sign(&sig::Native, &f[7], &canonical);
    let good = sig::sign(&sig::Native, &f[6], &to_sign);
    assert!(sig::verify(&sig::Native, &f[6], &to_sign, &good), "its own signature does not verify");
    if f[8] != good {
        assert!(
            !sig::verify(&sig::Native, &f[6], &to_sign, &f[8]),
            "`{}` verified in place of `{good}`",
            f[8]
        );
    }
    let _ = sig::authorization("AK", &signed, &good);
}

/// An OpenAPI document (YAML or JSON) imported into API drafts, as `POST
/// /groups/{id}/openapi` does. Invariant: every API id it makes is a valid id.
pub fn openapi(data: &[u8]) {
    let backend = serde_json::json!({"http": {"url": "http://backend.internal"}});
    let Ok(import) =
        wasmgate_admin::openapi::import(&String::from_utf8_lossy(data), "g", &backend, &|_| None)
    else {
        return;
    };
    for (id, _) in &import.apis {
        assert!(wasmgate_config::check_id(id).is_ok(), "the import made the API id `{id}`");
    }
    let drafts: Vec<serde_json::Value> = import.apis.into_iter().map(|(_, api)| api).collect();
    let _ = wasmgate_admin::openapi::export("g", &drafts);
}

/// A plugin's header changes in the packed `header-ops` layout, as the host reads them
/// (the WIT boundary: what a hostile plugin controls).
#[cfg(feature = "runtime")]
pub fn header_ops(data: &[u8]) {
    let _ = wasmgate_runtime::fuzzing::header_ops(data);
}
