//! Environments: an API is served only in the environments it is published in, clients pick
//! one with `X-Stage`, and `#{NAME}` variables take each environment's values.

mod common;

use common::{Gateway, HttpClient, Upstream, validate};

fn config(release: &Upstream, test: &Upstream) -> String {
    format!(
        "environments:\n- {{name: RELEASE, variables: {{UP: '{}'}}}}\n- {{name: TEST, variables: {{UP: '{}', NAME: test}}}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    environments: [RELEASE, TEST]\n    backend: {{http: {{url: '#{{UP}}/base'}}}}\n  - id: t\n    path: /t\n    environments: [TEST]\n    backend: {{mock: {{headers: {{x-env: 'in #{{NAME}}'}}, body: test-only}}}}\n",
        release.url(),
        test.url()
    )
}

#[tokio::test]
async fn x_stage_picks_the_environment_and_its_variables() {
    let (release, test) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&release, &test));
    let c = HttpClient::default();
    let r = c.get(&gw.url("/a"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/base/a");
    assert_eq!((release.hits(), test.hits()), (1, 0), "no X-Stage: the default environment");
    assert_eq!(c.get(&gw.url("/a"), &[("x-stage", "TEST")]).await.status, 200);
    assert_eq!((release.hits(), test.hits()), (1, 1), "X-Stage: TEST uses TEST's backend");

    // Published in TEST only.
    assert_eq!(c.get(&gw.url("/t"), &[]).await.error_code(), "APIG.0101");
    let r = c.get(&gw.url("/t"), &[("x-stage", "TEST")]).await;
    assert_eq!((r.status, r.header("x-env"), &r.body[..]), (200, Some("in test"), &b"test-only"[..]));
    // An environment nothing is published in.
    assert_eq!(c.get(&gw.url("/a"), &[("x-stage", "NOPE")]).await.error_code(), "APIG.0101");
}

#[test]
fn missing_variables_and_unknown_environments_are_refused_at_load() {
    let mock = "backend: {mock: {headers: {x-a: '#{MISSING}'}}}";
    let (ok, out) = validate(&format!(
        "environments: [{{name: TEST}}]\ngroups:\n- id: g\n  apis:\n  - {{id: a, path: /a, environments: [TEST], {mock}}}\n"
    ));
    assert!(!ok);
    assert!(
        out.contains("group `g` > api `a` > backend.mock.headers.x-a: variable `MISSING` is not set in environment `TEST`"),
        "{out}"
    );
    let (ok, out) = validate(
        "groups:\n- id: g\n  apis:\n  - {id: a, path: /a, environments: [STAGING], backend: {mock: {}}}\n",
    );
    assert!(!ok);
    assert!(out.contains("group `g` > api `a` > environments: no environment `STAGING`"), "{out}");
    let (ok, out) = validate("environments: [{name: 'bad name'}]\n");
    assert!(!ok);
    assert!(out.contains("environments[0]"), "{out}");
    // A URL that is only variables is checked once they are filled in.
    let (ok, out) = validate(
        "environments: [{name: RELEASE, variables: {UP: 'ftp://x'}}]\ngroups:\n- id: g\n  apis:\n  - {id: a, path: /a, backend: {http: {url: '#{UP}'}}}\n",
    );
    assert!(!ok);
    assert!(out.contains("api `a` > backend.http.url"), "{out}");
}
