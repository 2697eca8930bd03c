//! App authentication: AK/SK signatures as the public APIG SDK signers make them
//! (`SDK-HMAC-SHA256`), HMAC signatures in the style of APISIX's `hmac-auth`, AppCode simple
//! authentication (`X-Apig-AppCode`) and Basic auth (RFC 7617, access key and secret). The caller's credential is looked up by the key it
//! presents (the plugin never sees other apps' secrets); the authenticated app id goes into
//! the request identity for throttling, quotas and logs.

use base64::Engine;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use wasmgate_apig_signature::{self as sig, ALGORITHM, Digests};
use wasmgate_sdk::host::credentials::{self, Credential};
use wasmgate_sdk::host::crypto;
use wasmgate_sdk::prelude::*;

/// Digests computed by the gateway (`crypto` import): SHA-256 in Wasm costs several times
/// what it costs natively, and every signed request is hashed two or three times.
struct Host;

impl Digests for Host {
    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        crypto::sha256(data).to_bytes()
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> [u8; 32] {
        crypto::hmac_sha256(key, data).to_bytes()
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    SdkHmacSha256,
    Hmac,
    AppCode,
    Basic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_modes")]
    modes: Vec<Mode>,
    /// How far `X-Sdk-Date` may be from the gateway's clock.
    #[serde(default = "default_skew")]
    clock_skew_s: u64,
    /// The body is hashed for signatures, so it is read up to this size (larger: 413).
    #[serde(default = "default_max_body")]
    max_body_bytes: u32,
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::SdkHmacSha256]
}
fn default_skew() -> u64 {
    900
}
fn default_max_body() -> u32 {
    12 << 20
}

struct AppAuth {
    modes: Vec<Mode>,
    skew_ms: u64,
}

/// Why a request is refused: status, code, message.
struct Refusal(u16, &'static str, &'static str);

const MISSING: Refusal =
    Refusal(401, "APIG.0301", "Incorrect app authentication information: no credentials");
const BAD_SIGNATURE: Refusal =
    Refusal(401, "APIG.0301", "Incorrect app authentication information: signature mismatch");
const MALFORMED: Refusal =
    Refusal(401, "APIG.0301", "Incorrect app authentication information: malformed authorization");
const UNKNOWN_KEY: Refusal =
    Refusal(401, "APIG.0301", "Incorrect app authentication information: unknown key");
const NOT_AUTHORIZED: Refusal = Refusal(403, "APIG.0303", "The app is not authorized to access this API");
const EXPIRED: Refusal =
    Refusal(401, "APIG.0304", "The signature has expired: X-Sdk-Date is too far from the gateway's clock");

impl Policy for AppAuth {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        if c.modes.is_empty() {
            return Err(ConfigError::new("modes", "at least one of sdk-hmac-sha256, hmac, app-code, basic"));
        }
        if !(1..=86_400).contains(&c.clock_skew_s) {
            return Err(ConfigError::new("clock_skew_s", format!("{} is outside 1..=86400", c.clock_skew_s)));
        }
        let mut info = BindingInfo::request_only();
        info.request_fields = RequestFields::REQUEST_ID | RequestFields::PATH | RequestFields::QUERY;
        // A signature may cover any header.
        info.request_headers = HeaderSelection::All;
        if c.modes.contains(&Mode::SdkHmacSha256) {
            info.request_body = BodyNeed::Full(c.max_body_bytes);
        }
        Ok((AppAuth { modes: c.modes, skew_ms: c.clock_skew_s * 1000 }, info))
    }

    fn on_request(&self, req: &Request) -> RequestAction {
        match self.authenticate(req) {
            Ok((cred, auth_type)) if cred.authorized => RequestAction::Continue(RequestChanges {
                identity: Some(Identity { app_id: Some(cred.app_id), user: None }),
                context: vec![("auth_type".into(), auth_type.into())],
                ..Default::default()
            }),
            Ok(_) => refuse(req, NOT_AUTHORIZED),
            Err(r) => refuse(req, r),
        }
    }
}

fn refuse(req: &Request, Refusal(status, code, message): Refusal) -> RequestAction {
    RequestAction::Respond(Reply::error(status, code, message, req.request_id()))
}

impl AppAuth {
    /// The caller's credential and how it authenticated (`auth_type` in logs).
    fn authenticate(&self, req: &Request) -> Result<(Credential, &'static str), Refusal> {
        let authorization = req.header("authorization").unwrap_or("");
        if self.modes.contains(&Mode::SdkHmacSha256) && authorization.starts_with(ALGORITHM) {
            return self.verify_signature(req, authorization).map(|c| (c, "sdk-hmac-sha256"));
        }
        if self.modes.contains(&Mode::Hmac)
            && let Some(params) = authorization.strip_prefix("Signature ")
        {
            return self.verify_hmac(req, params).map(|c| (c, "hmac"));
        }
        if self.modes.contains(&Mode::AppCode)
            && let Some(code) = req.header("x-apig-appcode")
        {
            return credentials::by_app_code(code).map(|c| (c, "app-code")).ok_or(UNKNOWN_KEY);
        }
        if self.modes.contains(&Mode::Basic)
            && let Some(b64) = authorization.strip_prefix("Basic ")
        {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| MALFORMED)?;
            let text = String::from_utf8(decoded).map_err(|_| MALFORMED)?;
            let (key, secret) = text.split_once(':').ok_or(MALFORMED)?;
            let cred = credentials::by_key(key).ok_or(UNKNOWN_KEY)?;
            if bool::from(cred.secret.as_bytes().ct_eq(secret.as_bytes())) {
                return Ok((cred, "basic"));
            }
            return Err(BAD_SIGNATURE);
        }
        Err(MISSING)
    }

    /// `Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>, Signature=<hex>`.
    fn verify_signature(&self, req: &Request, authorization: &str) -> Result<Credential, Refusal> {
        let fields = authorization[ALGORITHM.len()..].trim();
        let (mut access, mut signed, mut signature) = (None, None, None);
        for part in fields.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or(MALFORMED)?;
            match k {
                "Access" => access = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => return Err(MALFORMED),
            }
        }
        let (access, signed, signature) =
            (access.ok_or(MALFORMED)?, signed.ok_or(MALFORMED)?, signature.ok_or(MALFORMED)?);
        let signed: Vec<&str> = signed.split(';').collect();
        if !signed.contains(&"host") || !signed.contains(&"x-sdk-date") {
            return Err(MALFORMED);
        }
        let date = req.header("x-sdk-date").ok_or(MALFORMED)?;
        let signed_at = sig::parse_sdk_date(date).ok_or(MALFORMED)?;
        let now = wasmgate_sdk::host::clock::now_ms();
        if now.abs_diff(signed_at) > self.skew_ms {
            return Err(EXPIRED);
        }
        let body_hash = match req.header("x-sdk-content-sha256") {
            Some(h) => h.to_string(),
            None => sig::sha256_hex(&Host, req.body.unwrap_or_default()),
        };
        let canonical = sig::canonical_request(
            req.method.as_str(),
            req.path(),
            req.query(),
            &signed,
            |n| req.header(n),
            &body_hash,
        )
        .ok_or(MALFORMED)?;
        let string_to_sign = sig::string_to_sign(&Host, date, &canonical);
        let cred = credentials::by_key(access).ok_or(UNKNOWN_KEY)?;
        if !sig::verify(&Host, &cred.secret, &string_to_sign, signature) {
            return Err(BAD_SIGNATURE);
        }
        Ok(cred)
    }
}

impl AppAuth {
    /// `Authorization: Signature keyId="<AK>",algorithm="hmac-sha256",headers="@request-target
    /// date ...",signature="<base64>"`. The signing string is the key id, then one line per
    /// listed header, each line ending in `\n`: `@request-target: <method, lower case>
    /// <path>[?<query>]` for the pseudo-header, `<name>: <trimmed value>` for the others.
    /// `date` must be listed and within the clock skew.
    fn verify_hmac(&self, req: &Request, params: &str) -> Result<Credential, Refusal> {
        let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
        for part in params.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or(MALFORMED)?;
            let v = v.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or(MALFORMED)?;
            match k.trim() {
                "keyId" => key_id = Some(v),
                "algorithm" => algorithm = Some(v),
                "headers" => headers = Some(v),
                "signature" => signature = Some(v),
                _ => return Err(MALFORMED),
            }
        }
        let (key_id, headers, signature) =
            (key_id.ok_or(MALFORMED)?, headers.ok_or(MALFORMED)?, signature.ok_or(MALFORMED)?);
        if algorithm != Some("hmac-sha256") {
            return Err(MALFORMED);
        }
        let names: Vec<&str> = headers.split_ascii_whitespace().collect();
        if !names.contains(&"date") {
            return Err(MALFORMED);
        }
        let date = req.header("date").ok_or(MALFORMED)?;
        let signed_at = httpdate::parse_http_date(date).map_err(|_| MALFORMED)?;
        let signed_at_ms =
            signed_at.duration_since(std::time::UNIX_EPOCH).map_err(|_| MALFORMED)?.as_millis() as u64;
        if wasmgate_sdk::host::clock::now_ms().abs_diff(signed_at_ms) > self.skew_ms {
            return Err(EXPIRED);
        }
        let mut signing = String::with_capacity(128);
        signing.push_str(key_id);
        signing.push('\n');
        for name in names {
            if name == "@request-target" {
                signing.push_str("@request-target: ");
                signing.push_str(&req.method.as_str().to_ascii_lowercase());
                signing.push(' ');
                signing.push_str(req.path());
                if !req.query().is_empty() {
                    signing.push('?');
                    signing.push_str(req.query());
                }
            } else {
                signing.push_str(name);
                signing.push_str(": ");
                signing.push_str(req.header(name).ok_or(MALFORMED)?.trim());
            }
            signing.push('\n');
        }
        let expected =
            base64::engine::general_purpose::STANDARD.decode(signature).map_err(|_| BAD_SIGNATURE)?;
        let cred = credentials::by_key(key_id).ok_or(UNKNOWN_KEY)?;
        let mac = Host.hmac_sha256(cred.secret.as_bytes(), signing.as_bytes());
        if !bool::from(mac[..].ct_eq(&expected[..])) {
            return Err(BAD_SIGNATURE);
        }
        Ok(cred)
    }
}

wasmgate_sdk::export_policy!(AppAuth);
