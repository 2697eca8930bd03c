//! The admin REST API through real HTTP: authentication, CRUD with ETags, pagination,
//! validation identical to config loading, and changes served by the gateway.

mod common;

use common::{Gateway, HttpClient, Reply, config_header, temp_dir, wasmgate};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A gateway serving an SQLite store that holds one group `g` with API `a`.
fn gateway() -> Gateway {
    let dir = temp_dir();
    let file = dir.join("seed.yaml");
    let seed = "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {mock: {body: one}}\n";
    std::fs::write(&file, format!("{}{seed}", config_header())).unwrap();
    let store = format!("sqlite://{}", dir.join("wasmgate.db").display());
    let out = wasmgate().args(["import", "--store", &store, "-c"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Gateway::start_from_store(&store)
}

struct Admin<'a> {
    gw: &'a Gateway,
    token: String,
}

impl Admin<'_> {
    fn of(gw: &Gateway) -> Admin<'_> {
        Admin { gw, token: gw.admin_token.clone().expect("a first start prints the admin token") }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
        let url = format!("http://{}{path}", self.gw.admin.unwrap());
        let auth = format!("Bearer {}", self.token);
        let mut all = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        all.extend_from_slice(headers);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        HttpClient::default().send(method, &url, &all, &body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None).await
    }

    async fn put(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
        self.call("PUT", path, headers, Some(body)).await
    }

    /// Upload a plugin component as `name` (`PUT /plugins/{name}/component`).
    async fn upload(&self, name: &str, component: Vec<u8>) -> Reply {
        let url = format!("http://{}/plugins/{name}/component", self.gw.admin.unwrap());
        let auth = format!("Bearer {}", self.token);
        let headers = [("authorization", auth.as_str()), ("content-type", "application/wasm")];
        HttpClient::default().send_bytes("PUT", &url, &headers, component).await
    }

    /// Publish API `id`'s current definition in `env`.
    async fn publish(&self, id: &str, env: &str, description: &str) -> Reply {
        let body = json!({"environment": env, "description": description});
        self.call("POST", &format!("/apis/{id}/publications"), &[], Some(body)).await
    }
}

fn etag(r: &Reply) -> &str {
    r.headers.get("etag").map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// Wait until `path` on the gateway answers `status` (and `body`, if given).
async fn until_served(gw: &Gateway, path: &str, status: u16, body: Option<&str>) -> Duration {
    until_served_in(gw, "RELEASE", path, status, body).await
}

/// The same, with `X-Stage: env`.
async fn until_served_in(gw: &Gateway, env: &str, path: &str, status: u16, body: Option<&str>) -> Duration {
    let since = Instant::now();
    loop {
        let r = HttpClient::default().get(&gw.url(path), &[("x-stage", env)]).await;
        if r.status == status && body.is_none_or(|b| r.body == b.as_bytes()) {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{path}: still {} {:?}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let gw = gateway();
    let url = format!("http://{}/groups", gw.admin.unwrap());
    let c = HttpClient::default();
    let none = c.get(&url, &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers.get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(c.get(&url, &[("authorization", "Bearer not-the-token")]).await.status, 401);
    let token = format!("Bearer {}", gw.admin_token.as_deref().unwrap());
    assert_eq!(c.get(&url, &[("authorization", &token)]).await.status, 200);
    // The API's own description is public.
    let spec = c.get(&format!("http://{}/openapi.json", gw.admin.unwrap()), &[]).await;
    assert_eq!((spec.status, spec.json()["info"]["title"].as_str()), (200, Some("Wasmgate admin API")));
    // The token is not in the log.
    assert!(!gw.log().contains(gw.admin_token.as_deref().unwrap()));
}

#[tokio::test]
async fn apis_are_created_updated_and_deleted_with_etags_and_served() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    let a = admin.get("/apis/a").await;
    assert_eq!((a.status, etag(&a)), (200, "\"1\""));
    assert_eq!(a.json()["body"]["group"], "g");

    let api_b = json!({"group": "g", "path": "/b", "backend": {"mock": {"body": "bee"}}});
    let created = admin.put("/apis/b", &[("if-none-match", "*")], api_b.clone()).await;
    assert_eq!((created.status, etag(&created)), (201, "\"1\""), "{:?}", created.body);
    assert_eq!(created.json()["body"]["id"], "b", "the id comes from the URL");
    // Not callable until published.
    assert_eq!(HttpClient::default().get(&gw.url("/b"), &[]).await.status, 404);
    assert_eq!(admin.publish("b", "RELEASE", "first").await.status, 201);
    let took = until_served(&gw, "/b", 200, Some("bee")).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(admin.put("/apis/b", &[("if-none-match", "*")], api_b.clone()).await.status, 412);

    let mut changed = api_b.clone();
    changed["backend"]["mock"]["body"] = json!("bee 2");
    let stale = admin.put("/apis/b", &[("if-match", "\"7\"")], changed.clone()).await;
    assert_eq!((stale.status, stale.json()["error"]["code"].as_str()), (412, Some("precondition_failed")));
    let updated = admin.put("/apis/b", &[("if-match", "\"1\"")], changed).await;
    assert_eq!((updated.status, etag(&updated)), (200, "\"2\""));
    assert_eq!(admin.publish("b", "RELEASE", "second").await.status, 201);
    until_served(&gw, "/b", 200, Some("bee 2")).await;

    assert_eq!(admin.call("DELETE", "/apis/b/deployments/RELEASE", &[], None).await.status, 204);
    until_served(&gw, "/b", 404, None).await;
    assert_eq!(admin.call("DELETE", "/apis/b", &[("if-match", "\"1\"")], None).await.status, 412);
    assert_eq!(admin.call("DELETE", "/apis/b", &[("if-match", "\"2\"")], None).await.status, 204);
    assert_eq!(admin.get("/apis/b").await.status, 404);
}

#[tokio::test]
async fn writes_are_checked_like_config_files() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    // A plugin's own config check, with the place named as for a file.
    let bad = json!({"group": "g", "path": "/c", "backend": {"mock": {}},
                     "policies": [{"plugin": "cors", "config": {"allow_origin": 7}}]});
    let r = admin.put("/apis/c", &[], bad).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "invalid");
    assert_eq!(e["location"], "group `g` > api `c` > policies[0] (cors)");
    assert!(e["message"].as_str().unwrap().contains("config.allow_origin"), "{e}");
    assert_eq!(admin.get("/apis/c").await.status, 404, "nothing was stored");

    let r = admin
        .put("/apis/x", &[], json!({"id": "y", "group": "g", "path": "/x", "backend": {"mock": {}}}))
        .await;
    assert_eq!((r.status, r.json()["error"]["location"].as_str()), (422, Some("id")));
    let r = admin.put("/apis/x", &[], json!({"group": "nope", "path": "/x", "backend": {"mock": {}}})).await;
    assert_eq!((r.status, r.json()["error"]["location"].as_str()), (422, Some("api `x`")));
    // A group still holding APIs cannot go.
    assert_eq!(admin.call("DELETE", "/groups/g", &[], None).await.status, 422);
    assert_eq!(admin.put("/apis/x", &[], json!("not an object")).await.status, 400);
    // Ids are one clean path segment.
    for bad in ["..%2f..%2fetc", "a%20b", ".hidden"] {
        let r = admin
            .put(&format!("/apis/{bad}"), &[], json!({"group": "g", "path": "/x", "backend": {"mock": {}}}))
            .await;
        let e = &r.json()["error"];
        assert_eq!((r.status, e["location"].as_str()), (422, Some("id")), "{bad}: {e}");
        assert!(e["message"].as_str().unwrap().contains("is not a valid id"), "{e}");
        let r = admin.upload(bad, b"not read".to_vec()).await;
        assert_eq!((r.status, r.json()["error"]["location"].as_str()), (422, Some("id")), "{bad}");
    }
    assert_eq!(admin.get("/nonsense").await.status, 404);
    assert_eq!(admin.call("POST", "/apis", &[], Some(json!({}))).await.status, 405);
    until_served(&gw, "/a", 200, Some("one")).await;
}

#[tokio::test]
async fn lists_page_and_the_token_is_kept_across_restarts() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    for i in 0..5 {
        let cred = json!({"key": format!("ak-{i}"), "secret": "0123456789abcdef0123"});
        assert_eq!(admin.put(&format!("/credentials/app-{i}"), &[], cred).await.status, 201);
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(after) => format!("/credentials?limit=2&after={after}"),
            None => "/credentials?limit=2".to_string(),
        };
        let page = admin.get(&path).await.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["app-0", "app-1", "app-2", "app-3", "app-4"]);
    assert_eq!(admin.get("/credentials?limit=0").await.status, 400);

    // Another gateway on the same store makes no new token and accepts the first one.
    let store = gw.store_url().unwrap();
    let second = Gateway::start_from_store(&store);
    assert!(second.admin_token.is_none());
    let again = Admin { gw: &second, token: admin.token.clone() };
    assert_eq!(again.get("/credentials/app-3").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_under_load_drop_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let gw = gateway();
    let admin = Admin::of(&gw);
    let (stop, served, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop, served, failed) = (gw.url("/a"), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                let c = HttpClient::default();
                while !stop.load(Ordering::Relaxed) {
                    let r = c.get(&url, &[]).await;
                    let counter = if r.status == 200 && (r.body.starts_with(b"v") || r.body == "one") {
                        &served
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 0..10 {
        let api = json!({"group": "g", "path": "/a", "backend": {"mock": {"body": format!("v{i}")}}});
        assert_eq!(admin.put("/apis/a", &[], api).await.status, 200);
        assert_eq!(admin.publish("a", "RELEASE", "load").await.status, 201);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_served(&gw, "/a", 200, Some("v9")).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed during 10 changes", served + failed);
    assert!(served > 100, "only {served} requests");
}

#[tokio::test]
async fn publish_history_rollback_and_environments() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    let c = HttpClient::default();
    // A variable TEST does not set yet: refused at publish time, naming it.
    let api = |v: &str| json!({"group": "g", "path": "/a", "backend": {"mock": {"headers": {"x-v": "#{V}"}, "body": v}}});
    // A draft is checked in its own environments (here the default, RELEASE).
    assert_eq!(admin.put("/apis/a", &[], api("t")).await.status, 422);
    assert_eq!(
        admin.put("/environments/RELEASE", &[], json!({"variables": {"V": "release"}})).await.status,
        201
    );
    assert_eq!(admin.put("/apis/a", &[], api("t")).await.status, 200);
    let r = admin.publish("a", "TEST", "").await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no environment `TEST`"), "{:?}", r.body);
    let env = json!({"variables": {"OTHER": "x"}});
    assert_eq!(admin.put("/environments/TEST", &[], env).await.status, 201);
    let r = admin.publish("a", "TEST", "").await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("variable `V` is not set in environment `TEST`")
    );
    assert_eq!(admin.put("/environments/TEST", &[], json!({"variables": {"V": "test"}})).await.status, 200);
    assert_eq!(admin.publish("a", "TEST", "for testers").await.status, 201);
    until_served_in(&gw, "TEST", "/a", 200, Some("t")).await;
    assert_eq!(c.get(&gw.url("/a"), &[]).await.body, "one", "RELEASE still serves the import");
    let r = c.get(&gw.url("/a"), &[("x-stage", "TEST")]).await;
    assert_eq!((r.header("x-v"), &r.body[..]), (Some("test"), &b"t"[..]));

    // Eleven more publications in RELEASE (the import was the first): the last ten are kept.
    for v in 1..=11 {
        assert_eq!(admin.put("/apis/a", &[], api(&format!("v{v}"))).await.status, 200);
        assert_eq!(admin.publish("a", "RELEASE", &format!("v{v}")).await.status, 201);
    }
    until_served(&gw, "/a", 200, Some("v11")).await;
    let history = admin.get("/apis/a/publications?environment=RELEASE").await.json();
    let items = history["items"].as_array().unwrap();
    assert!(items.len() >= 10, "{}", items.len());
    assert_eq!((items[0]["description"].as_str(), items[0]["current"].as_bool()), (Some("v11"), Some(true)));
    // Roll back to v5: exactly what v5 served.
    let v5 = items.iter().find(|p| p["description"] == "v5").unwrap()["version"].as_i64().unwrap();
    let r = admin.put("/apis/a/deployments/RELEASE", &[], json!({"version": v5})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    until_served(&gw, "/a", 200, Some("v5")).await;
    assert_eq!(c.get(&gw.url("/a"), &[]).await.header("x-v"), Some("release"));
    assert_eq!(admin.put("/apis/a/deployments/RELEASE", &[], json!({"version": 999})).await.status, 404);
    // Offline in RELEASE; TEST keeps serving its own publication.
    assert_eq!(admin.call("DELETE", "/apis/a/deployments/RELEASE", &[], None).await.status, 204);
    until_served(&gw, "/a", 404, None).await;
    assert_eq!(c.get(&gw.url("/a"), &[("x-stage", "TEST")]).await.body, "t");
    // No draft names TEST, but a publication serves there: TEST cannot be removed.
    let r = admin.call("DELETE", "/environments/TEST", &[], None).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no environment `TEST`"), "{:?}", r.body);
}

#[tokio::test]
async fn openapi_documents_are_imported_into_a_group_and_exported() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    let c = HttpClient::default();
    let petstore = std::fs::read_to_string(common::repo_root().join("tests/data/petstore.yaml")).unwrap();
    let backend = json!({"mock": {"headers": {"content-type": "application/json"}, "body": "{\"id\": 42}"}});
    let r = admin
        .call("POST", "/groups/g/openapi", &[], Some(json!({"document": petstore, "backend": backend})))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.json()["created"], json!(["listPets", "createPets", "showPetById"]));
    assert_eq!(r.json()["skipped"], json!([]), "{:?}", r.body);
    // Parameters become the API's declared parameters: the gateway checks them.
    let list = admin.get("/apis/listPets").await.json();
    let limit = json!([{"name": "limit", "in": "query", "type": "integer", "required": false, "max": 100.0}]);
    assert_eq!(list["body"]["parameters"], limit);
    let show = admin.get("/apis/showPetById").await.json();
    assert_eq!(
        (show["body"]["path"].as_str(), show["body"]["method"].as_str()),
        (Some("/pets/{petId}"), Some("GET"))
    );
    assert_eq!(show["body"]["name"], "Info for a specific pet");

    // Drafts: served once published.
    assert_eq!(admin.publish("showPetById", "RELEASE", "from petstore").await.status, 201);
    until_served(&gw, "/pets/42", 200, Some("{\"id\": 42}")).await;

    // Export describes the group; the imported operations come back as they went in.
    let exported = admin.get("/groups/g/openapi").await.json();
    assert_eq!(exported["openapi"], "3.0.3");
    let paths = exported["paths"].as_object().unwrap();
    assert_eq!(paths["/pets"]["get"]["operationId"], "listPets");
    assert_eq!(paths["/pets"]["post"]["operationId"], "createPets");
    assert_eq!(paths["/pets/{petId}"]["get"]["operationId"], "showPetById");
    assert_eq!(paths["/pets/{petId}"]["get"]["parameters"][0]["name"], "petId");
    // ... and import again, elsewhere, to the same operations.
    assert_eq!(admin.put("/groups/h", &[], json!({"domains": ["h.example"]})).await.status, 201);
    let again = serde_json::to_string(&exported)
        .unwrap()
        .replace("\"listPets\"", "\"listPets2\"")
        .replace("\"createPets\"", "\"createPets2\"")
        .replace("\"showPetById\"", "\"showPetById2\"");
    let r = admin
        .call("POST", "/groups/h/openapi", &[], Some(json!({"document": again, "backend": {"mock": {}}})))
        .await;
    // The seed API `a` answers any method: exported as one operation per method.
    let created = r.json()["created"].clone();
    let methods = ["get", "put", "post", "delete", "options", "head", "patch"].map(|m| format!("a-{m}"));
    let mut expected: Vec<String> = methods.to_vec();
    expected.extend(["listPets2", "createPets2", "showPetById2"].map(String::from));
    assert_eq!(created, json!(expected), "{:?}", r.body);

    // What cannot be taken is reported; with nothing left to create, that is no 201.
    let odd = "openapi: 3.0.1\ninfo: {title: t, version: '1'}\npaths:\n  /files/{name}.json:\n    get: {operationId: getFile, responses: {}}\n  /ok:\n    get: {operationId: listPets, responses: {}, parameters: [{name: s, in: cookie}]}\n    trace: {responses: {}}\n";
    let r = admin
        .call("POST", "/groups/g/openapi", &[], Some(json!({"document": odd, "backend": {"mock": {}}})))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.json()["created"], json!([]));
    let skipped = r.json()["skipped"].to_string();
    assert_eq!(r.json()["skipped"].as_array().unwrap().len(), 3, "{skipped}");
    assert!(skipped.contains("whole segment"), "{skipped}");
    assert!(skipped.contains("`listPets` exists already (in group `g`)"), "{skipped}");
    // Two paths naming the same position differently (as real documents do) both import.
    let twins = "openapi: 3.0.1\ninfo: {title: t, version: '1'}\npaths:\n  /flows/{Sid}:\n    get: {operationId: getFlow, responses: {}}\n  /flows/{FlowSid}/runs:\n    get: {operationId: listRuns, responses: {}, parameters: [{name: page, in: query, schema: {type: integer, minimum: 1}}, {name: s, in: cookie}]}\n";
    let r = admin
        .call("POST", "/groups/g/openapi", &[], Some(json!({"document": twins, "backend": {"mock": {}}})))
        .await;
    assert_eq!(
        (r.status, r.json()["created"].clone()),
        (201, json!(["listRuns", "getFlow"])),
        "{:?}",
        r.body
    );
    assert!(r.json()["skipped"].to_string().contains("`s` (cookie)"), "{:?}", r.body);
    assert_eq!(admin.publish("listRuns", "RELEASE", "").await.status, 201);
    until_served(&gw, "/flows/F1/runs?page=2", 200, None).await;
    let refused = c.get(&gw.url("/flows/F1/runs?page=0"), &[]).await;
    assert_eq!(refused.status, 400, "page below its minimum: {:?}", refused.body);
    let swagger = json!({"document": "swagger: '2.0'\npaths: {}\n", "backend": {"mock": {}}});
    let r = admin.call("POST", "/groups/g/openapi", &[], Some(swagger)).await;
    assert_eq!((r.status, r.json()["error"]["location"].as_str()), (422, Some("document")));
    let big = json!({"document": format!("openapi: 3.0.0\n#{}\n", "x".repeat(101 * 1024)), "backend": {"mock": {}}});
    assert_eq!(admin.call("POST", "/groups/g/openapi", &[], Some(big)).await.status, 413);
}

/// `wasmgate admin ...` against the gateway's admin API; success and what it printed.
fn cli(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let out = wasmgate()
        .arg("admin")
        .args(args)
        .env("WASMGATE_ADMIN_URL", format!("http://{}", gw.admin.unwrap()))
        .env("WASMGATE_ADMIN_TOKEN", gw.admin_token.as_deref().unwrap())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn the_cli_applies_publishes_and_rolls_back() {
    let gw = gateway();
    let dir = temp_dir();
    let file = dir.join("hello.yaml");
    let write = |body: &str| {
        let api = format!(
            "- collection: apis\n  id: hello\n  body: {{group: g, path: /hello, backend: {{mock: {{body: {body}}}}}}}\n"
        );
        std::fs::write(&file, api).unwrap();
    };
    write("v1");
    let f = file.to_str().unwrap();
    let (ok, out) = cli(&gw, &["apply", "-f", f]);
    assert!(ok && out.contains("apis/hello: revision 1"), "{out}");
    let (ok, out) = cli(&gw, &["publish", "hello", "-m", "first"]);
    assert!(ok && out.contains("version 1 published in RELEASE"), "{out}");
    until_served(&gw, "/hello", 200, Some("v1")).await;
    write("v2");
    assert!(cli(&gw, &["apply", "-f", f]).0);
    assert!(cli(&gw, &["publish", "hello", "-m", "second"]).0);
    until_served(&gw, "/hello", 200, Some("v2")).await;

    let (ok, out) = cli(&gw, &["history", "hello"]);
    assert!(ok && out.contains("version 2\tsecond  (served)") && out.contains("version 1\tfirst"), "{out}");
    let (ok, out) = cli(&gw, &["rollback", "hello", "--version", "1"]);
    assert!(ok, "{out}");
    until_served(&gw, "/hello", 200, Some("v1")).await;
    let (ok, out) = cli(&gw, &["list", "apis"]);
    assert!(ok && out.contains("a\trevision 1") && out.contains("hello\trevision 2"), "{out}");

    // Errors say where, as the API does.
    std::fs::write(
        &file,
        "- {collection: apis, id: bad, body: {group: nope, path: /x, backend: {mock: {}}}}\n",
    )
    .unwrap();
    let (ok, out) = cli(&gw, &["apply", "-f", f]);
    assert!(
        !ok && out.contains("422") && out.contains("api `bad`: names a group that does not exist"),
        "{out}"
    );

    // OpenAPI import: what was made, what was left out; again, nothing is made and it fails.
    let petstore = common::repo_root().join("tests/data/petstore.yaml");
    let petstore = petstore.to_str().unwrap();
    let (ok, out) = cli(&gw, &["import", "g", petstore, "--backend", "{mock: {body: pets}}"]);
    assert!(ok && out.contains("created listPets\ncreated createPets\ncreated showPetById"), "{out}");
    let (ok, out) = cli(&gw, &["import", "g", petstore, "--backend", "{mock: {}}"]);
    assert!(!ok && out.contains("409"), "{out}");
    assert!(
        out.contains("skipped GET /pets: an API with the id `listPets` exists already (in group `g`)"),
        "{out}"
    );
}

#[tokio::test]
async fn resetting_a_credential_replaces_its_keys() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    let old_code = "0ld-c0de-0ld-c0de-0ld-c0de-0ld-c0de";
    let cred =
        json!({"key": "ak-old", "secret": "sk-old-0123456789abcdef", "app_code": old_code, "apis": ["s"]});
    let api = json!({"group": "g", "path": "/s", "backend": {"mock": {"body": "in"}},
                     "policies": [{"plugin": "app-auth", "config": {"modes": ["app-code"]}}]});
    assert_eq!(admin.put("/apis/s", &[], api).await.status, 201);
    let r = admin.put("/credentials/app-x", &[], cred).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(admin.publish("s", "RELEASE", "").await.status, 201);
    let call = |code: String| {
        let url = gw.url("/s");
        async move { HttpClient::default().get(&url, &[("x-apig-appcode", code.as_str())]).await.status }
    };
    let since = Instant::now();
    while call(old_code.into()).await != 200 {
        assert!(since.elapsed() < Duration::from_secs(5), "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = admin.call("POST", "/credentials/app-x/reset", &[], None).await;
    assert_eq!((r.status, etag(&r)), (200, "\"2\""), "{:?}", r.body);
    let body = &r.json()["body"];
    let new_code = body["app_code"].as_str().unwrap().to_string();
    assert_eq!(new_code.len(), 64);
    assert_eq!(body["key"].as_str().unwrap().len(), 32);
    assert_ne!(body["secret"], "sk-old-0123456789abcdef");
    let since = Instant::now();
    while call(old_code.into()).await != 401 {
        assert!(since.elapsed() < Duration::from_secs(5), "the old AppCode still works");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call(new_code).await, 200);
    assert_eq!(admin.call("POST", "/credentials/nobody/reset", &[], None).await.status, 404);
    // An API a credential is authorised to can go offline; gateways drop the authorisation
    // from what they serve rather than refuse the configuration.
    assert_eq!(admin.call("DELETE", "/apis/s/deployments/RELEASE", &[], None).await.status, 204);
    until_served(&gw, "/s", 404, None).await;
    assert!(!gw.log().contains("config reload rejected"), "{}", gw.log());
}

#[tokio::test]
async fn debug_calls_an_unpublished_api_and_traces_each_policy() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    let upstream = common::Upstream::start().await;
    let api = json!({"group": "g", "path": "/dbg", "backend": {"http": {"url": upstream.url()}}, "policies": [
        {"plugin": "access-control", "config": {"ip": {"allow": ["127.0.0.0/8"]}}},
        {"plugin": "throttling", "config": {"api_limit": 1, "unit": "hour", "algorithm": "local"}},
        {"plugin": "response-headers", "config": {"response_headers": [{"name": "x-debugged", "value": "yes", "action": "override"}]}},
    ]});
    assert_eq!(admin.put("/apis/dbg", &[], api).await.status, 201);
    let debug = |body: Value| admin.call("POST", "/apis/dbg/debug", &[], Some(body));

    let r =
        debug(json!({"method": "POST", "path": "/dbg?x=1", "headers": {"x-client": "c"}, "body": "hello"}))
            .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let report = r.json();
    let response = &report["response"];
    assert_eq!(response["status"], 200, "{report}");
    assert!(response["headers"].as_array().unwrap().contains(&json!(["x-debugged", "yes"])), "{report}");
    let echo: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&echo["method"], &echo["query"], &echo["body"]),
        (&json!("POST"), &json!("x=1"), &json!("hello"))
    );
    assert_eq!(echo["headers"]["x-client"], "c");

    let trace = &report["trace"];
    assert_eq!((trace["api"].as_str(), trace["environment"].as_str()), (Some("dbg"), Some("RELEASE")));
    let steps = trace["steps"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|s| {
            (s["plugin"].as_str().unwrap(), s["phase"].as_str().unwrap(), s["decision"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("access-control", "request", "continue"),
            ("throttling", "request", "continue"),
            ("response-headers", "response", "continue"),
        ],
        "{trace}"
    );
    assert_eq!(steps[2]["declared"], true);
    assert_eq!(steps[2]["changes"], json!(["set header x-debugged: yes"]));
    assert!(steps.iter().all(|s| s["micros"].is_u64()));
    // Each step says what its binding was granted (built-ins reach only what their config says).
    assert_eq!(
        steps[0]["grants"],
        "outbound none; log sinks none; backend overrides as its config says (built in)"
    );
    // The backend request as sent: the gateway's own headers added, the client's kept.
    let backend = &trace["backend"];
    assert_eq!((backend["kind"].as_str(), backend["method"].as_str()), (Some("http"), Some("POST")));
    assert_eq!(backend["url"].as_str().unwrap(), format!("{}/dbg?x=1", upstream.url()));
    let sent = backend["headers"].as_array().unwrap();
    for name in ["x-client", "x-request-id", "x-forwarded-for"] {
        assert!(sent.iter().any(|h| h[0] == name), "{name} not in {backend}");
    }
    assert_eq!((backend["status"].as_u64(), backend["outcome"].as_str()), (Some(200), Some("responded")));
    assert_eq!(upstream.hits(), 1);

    // The second call is over the limit: the throttling policy answers, the backend is not
    // called, and the response phase still runs.
    let report = debug(json!({"path": "/dbg"})).await.json();
    assert_eq!(report["response"]["status"], 429, "{report}");
    let steps = report["trace"]["steps"].as_array().unwrap();
    assert_eq!((&steps[1]["decision"], &steps[1]["status"]), (&json!("respond"), &json!(429)), "{report}");
    assert_eq!(report["trace"]["backend"]["kind"], "not_called");
    assert_eq!(upstream.hits(), 1);

    // From a client the ACL refuses: only the first policy ran.
    let report = debug(json!({"path": "/dbg", "client_ip": "203.0.113.9"})).await.json();
    let steps = report["trace"]["steps"].as_array().unwrap();
    assert_eq!(report["response"]["status"], 403, "{report}");
    let plugins: Vec<&str> = steps.iter().map(|s| s["plugin"].as_str().unwrap()).collect();
    // The declared headers go on every response, the ACL's answer too.
    assert_eq!(plugins, ["access-control", "response-headers"], "{report}");
    assert_eq!(steps[0]["decision"], "respond");

    // A path the API does not serve: no route, no steps.
    let report = debug(json!({"path": "/elsewhere"})).await.json();
    assert_eq!((report["response"]["status"].as_u64(), &report["trace"]["api"]), (Some(404), &Value::Null));

    // Debugging published nothing.
    assert_eq!(HttpClient::default().get(&gw.url("/dbg"), &[]).await.status, 404);
    // Bad calls name what is wrong.
    let r = debug(json!({"path": "dbg"})).await;
    assert_eq!((r.status, r.json()["error"]["location"].as_str()), (422, Some("path")));
    let r = debug(json!({"path": "/dbg", "headers": {"x-a": 1}})).await;
    assert_eq!(
        (r.status, r.json()["error"]["location"].as_str()),
        (422, Some("headers.x-a")),
        "{:?}",
        r.body
    );
    let r = admin.call("POST", "/apis/nope/debug", &[], Some(json!({"path": "/"}))).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn uploaded_plugins_are_checked_shared_through_the_store_and_served() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    // Not a component, or a core module: refused, saying why; nothing is created.
    for bytes in [b"not wasm".to_vec(), b"\0asm\x01\0\0\0".to_vec()] {
        let r = admin.upload("mine", bytes).await;
        let error = &r.json()["error"];
        assert_eq!((r.status, error["location"].as_str()), (422, Some("component")), "{:?}", r.body);
        assert!(error["message"].as_str().unwrap().contains("not a valid plugin component"), "{error}");
    }
    assert_eq!(admin.get("/plugins/mine").await.status, 404);

    // The response-headers plugin's component, uploaded as a custom plugin.
    let component =
        std::fs::read(common::plugin_dir().join("wasmgate_plugin_response_headers.wasm")).unwrap();
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&component));
    let r = admin.upload("mine", component.clone()).await;
    assert_eq!((r.status, r.json()["body"]["sha256"].as_str()), (201, Some(sha256.as_str())), "{:?}", r.body);
    let headers = json!([{"name": "x-mine", "value": "uploaded", "action": "override"}]);
    let api = json!({"group": "g", "path": "/a", "backend": {"mock": {"body": "one"}},
                     "policies": [{"plugin": "mine", "config": {"response_headers": headers}}]});
    assert_eq!(admin.put("/apis/a", &[], api).await.status, 200);
    assert_eq!(admin.publish("a", "RELEASE", "with mine").await.status, 201);
    let served = || async { HttpClient::default().get(&gw.url("/a"), &[]).await };
    let since = Instant::now();
    while served().await.header("x-mine") != Some("uploaded") {
        assert!(since.elapsed() < Duration::from_secs(5), "the uploaded plugin is not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another component whose check refuses the binding's config (CORS has no
    // `response_headers`): refused, and the plugin keeps the component it had.
    let cors = std::fs::read(common::plugin_dir().join("wasmgate_plugin_cors.wasm")).unwrap();
    let r = admin.upload("mine", cors).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(admin.get("/plugins/mine").await.json()["body"]["sha256"], json!(sha256));

    // A second gateway whose cache lacks the component fetches it from the store.
    let cache = common::repo_root().join("target/test-plugin-cache/uploaded");
    std::fs::remove_file(cache.join(format!("{sha256}.wasm"))).unwrap();
    let second = Gateway::start_from_store(&gw.store_url().unwrap());
    let r = HttpClient::default().get(&second.url("/a"), &[]).await;
    assert_eq!((r.status, r.header("x-mine")), (200, Some("uploaded")), "{:?}", r.body);
    assert_eq!(std::fs::read(cache.join(format!("{sha256}.wasm"))).unwrap(), component);

    // Export names the component by its hash; importing the file into another store takes
    // the component along.
    let dir = common::temp_dir();
    let file = dir.join("exported.yaml");
    let out =
        wasmgate().args(["export", "--store", &gw.store_url().unwrap(), "-o"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&file).unwrap().contains(&sha256));
    let other = format!("sqlite://{}", dir.join("other.db").display());
    let out = wasmgate().args(["import", "--store", &other, "-c"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(cache.join(format!("{sha256}.wasm"))).unwrap();
    let third = Gateway::start_from_store(&other);
    assert_eq!(HttpClient::default().get(&third.url("/a"), &[]).await.header("x-mine"), Some("uploaded"));
}

#[tokio::test]
async fn binding_configs_are_checked_against_the_plugins_schema() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    // The Rust A/B router example declares a config schema in its component.
    let component = std::fs::read(common::plugin_dir().join("ab_router.wasm")).unwrap();
    assert_eq!(admin.upload("ab", component).await.status, 201);
    let api = |beta: &str| {
        json!({"group": "g", "path": "/ab", "backend": {"mock": {}},
               "policies": [{"plugin": "ab", "config": {"variants": {"beta": beta}}}]})
    };
    let r = admin.put("/apis/ab", &[], api("ftp://elsewhere")).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["location"], "group `g` > api `ab` > policies[0] (ab)");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("config.variants.beta: ") && message.ends_with("(the plugin's config schema)"),
        "{e}"
    );
    assert_eq!(admin.get("/apis/ab").await.status, 404, "nothing was stored");
    let r = admin.put("/apis/ab", &[], api("http://127.0.0.1:9")).await;
    assert!(matches!(r.status, 200 | 201), "{:?}", r.body);
}

/// The README's operator walkthrough (create, bind, debug, publish, call, roll back), run
/// exactly as written against a gateway on a fresh store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_operator_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let marker = "<!-- tests/admin.rs runs the next block as it is written -->\n```sh\n";
    let start = readme.find(marker).expect("the README marks its walkthrough") + marker.len();
    let script = readme[start..start + readme[start..].find("\n```\n").unwrap()].to_string();

    let dir = temp_dir();
    let seed = dir.join("empty.yaml");
    std::fs::write(&seed, config_header()).unwrap();
    let store = format!("sqlite://{}", dir.join("wasmgate.db").display());
    let out = wasmgate().args(["import", "--store", &store, "-c"]).arg(&seed).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gw = Gateway::start_from_store(&store);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wasmgate")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut run = std::process::Command::new("bash");
    run.args(["-euo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .env("GW", format!("http://{}", gw.addr))
        .env("WASMGATE_ADMIN_URL", format!("http://{}", gw.admin.unwrap()))
        .env("WASMGATE_ADMIN_TOKEN", gw.admin_token.clone().unwrap());
    let out = tokio::task::spawn_blocking(move || run.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // What the client saw: the first publication, the second, the first again.
    let served: Vec<&str> = stdout.lines().filter(|l| l.starts_with("hello v")).collect();
    assert_eq!(served, ["hello v1", "hello v1", "hello v2", "hello v1"], "{stdout}");
    // The first `hello v1` is the debug call's body, after its trace.
    for line in [
        "GET /hello in RELEASE: api hello",
        "request  access-control       continue",
        "response response-headers     continue",
        "(declared at load); set header x-served-by: wasmgate",
        "backend: mock → 200",
        "x-served-by: wasmgate",
        "hello: version 1 published in RELEASE",
        "hello: version 2 published in RELEASE",
        "hello: version 1 served in RELEASE",
    ] {
        assert!(stdout.contains(line), "`{line}` not in:\n{stdout}");
    }
}

/// `component` with a custom section of `size` bytes appended: as large as an interpreter
/// built into a component, and as valid.
fn padded(mut component: Vec<u8>, size: usize, name: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let name = name.as_bytes();
    let mut payload = Vec::with_capacity(size + 16);
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.resize(payload.len() + size, 0xa5);
    component.push(0);
    leb(payload.len(), &mut component);
    component.extend_from_slice(&payload);
    component
}

fn rss_mib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib >> 10
}

#[tokio::test]
async fn large_uploads_leave_the_gateway_holding_only_what_it_serves() {
    let gw = gateway();
    let admin = Admin::of(&gw);
    // A Python plugin (the interpreter is compiled in: 20 MB of code) padded to 52 MB.
    let component = std::fs::read(common::repo_root().join("target/sdk/ab-router-py.wasm")).unwrap();
    let before = rss_mib(&gw);
    // New bytes on every run, so nothing is found compiled in the test plugin cache.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let cache = common::repo_root().join("target/test-plugin-cache");
    let mut rss = Vec::new();
    for round in 0..2 {
        let big = padded(component.clone(), 32 << 20, &format!("padding-{run}-{round}"));
        let r = admin.upload("big", big).await;
        assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
        rss.push(rss_mib(&gw));
        // The test cache is shared by every run: leave no 50 MB files in it.
        let sha256 = r.json()["body"]["sha256"].as_str().unwrap().to_string();
        for f in std::fs::read_dir(&cache).unwrap().chain(std::fs::read_dir(cache.join("uploaded")).unwrap())
        {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().starts_with(&sha256) {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
    }
    // Compiling the interpreter takes the gateway to ~500 MiB for a moment. Afterwards it
    // keeps the component it serves, not what the compile threads used (glibc keeps freed
    // memory in its arenas unless trimmed) nor every component it ever compiled.
    // (Before: +470 MiB after two, and 36 MiB more with each further one.)
    assert!(rss[1] < before + 300, "RSS {before} MiB before, then {rss:?} MiB after each upload");
}
