//! Access control: IP (v4, v6, CIDR) and account allow/deny lists.

mod common;
use common::*;

fn gateway() -> Gateway {
    let api = |id: &str, cfg: &str| {
        format!(
            "      - {{id: {id}, path: /{id}, backend: {{mock: {{body: ok}}}}, policies: [{{plugin: inspector}}, {{plugin: access-control, config: {cfg}}}]}}\n"
        )
    };
    Gateway::start(&format!(
        "plugins: {{inspector: {{path: '{}'}}}}\ngroups:\n  - id: g\n    apis:\n{}{}{}{}{}{}",
        fixture("inspector").display(),
        api("allow-loopback", "{ip: {allow: ['10.0.0.0/8', '127.0.0.1/32', '2001:db8::/32']}}"),
        api("allow-elsewhere", "{ip: {allow: ['10.0.0.0/8', '::1']}}"),
        api("deny-loopback", "{ip: {deny: ['127.0.0.0/8']}}"),
        api("deny-other", "{ip: {deny: ['192.168.1.7', 'fe80::/10']}}"),
        api("accounts-allow", "{accounts: {allow: [app-1, alice]}}"),
        api("accounts-deny", "{accounts: {deny: [app-9]}}"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_lists_allow_and_deny_by_address_and_range() {
    let gw = gateway();
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/allow-loopback"), &[]).await.status, 200);
    let r = c.get(&gw.url("/allow-elsewhere"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "APIG.0302"));
    assert_eq!(c.get(&gw.url("/deny-loopback"), &[]).await.status, 403);
    assert_eq!(c.get(&gw.url("/deny-other"), &[]).await.status, 200);
    // X-Forwarded-For is not trusted: the peer address decides.
    assert_eq!(c.get(&gw.url("/allow-elsewhere"), &[("x-forwarded-for", "10.1.2.3")]).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_lists_match_the_authenticated_app_or_user() {
    let gw = gateway();
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/accounts-allow"), &[("x-app", "app-1")]).await.status, 200);
    assert_eq!(c.get(&gw.url("/accounts-allow"), &[("x-user", "alice")]).await.status, 200);
    assert_eq!(c.get(&gw.url("/accounts-allow"), &[("x-app", "app-2")]).await.status, 403);
    assert_eq!(
        c.get(&gw.url("/accounts-allow"), &[]).await.status,
        403,
        "no identity is not on an allow list"
    );
    assert_eq!(c.get(&gw.url("/accounts-deny"), &[("x-app", "app-9")]).await.status, 403);
    assert_eq!(c.get(&gw.url("/accounts-deny"), &[("x-app", "app-1")]).await.status, 200);
}

#[test]
fn bad_access_lists_are_rejected_naming_the_entry() {
    let many: Vec<String> = (0..101).map(|i| format!("'10.0.{}.{}'", i / 256, i % 256)).collect();
    let cases = [
        ("{ip: {allow: ['10.0.0.0/33']}}".to_string(), "config.ip.allow[0]"),
        ("{ip: {deny: ['127.0.0.1', 'not-an-ip']}}".into(), "config.ip.deny[1]"),
        ("{ip: {deny: ['::1/129']}}".into(), "config.ip.deny[0]"),
        (format!("{{ip: {{allow: [{}]}}}}", many.join(",")), "config.ip.allow: 101 entries, at most 100"),
        ("{}".into(), "needs `ip` or `accounts`"),
    ];
    for (cfg, expected) in cases {
        let (ok, out) = validate(&one_binding("access-control", &cfg));
        assert!(!ok && out.contains(expected), "expected `{expected}` in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_ip_comes_from_x_forwarded_for() {
    let yaml = format!(
        "listeners: [{{address: '127.0.0.1:0', trusted_proxies: ['127.0.0.1/32']}}]\ngateway: {{plugin_cache_dir: '{}'}}\ngroups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{body: ok}}}}, policies: [{{plugin: access-control, config: {{ip: {{allow: ['10.0.0.0/8']}}}}}}]}}\n",
        repo_root().join("target/test-plugin-cache").display()
    );
    let gw = Gateway::start_whole(&yaml);
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/a"), &[("x-forwarded-for", "10.1.2.3")]).await.status, 200);
    // The right-most untrusted hop decides, not what the client wrote further left.
    assert_eq!(c.get(&gw.url("/a"), &[("x-forwarded-for", "10.1.2.3, 203.0.113.5")]).await.status, 403);
    assert_eq!(c.get(&gw.url("/a"), &[]).await.status, 403);
}
