//! `SDK-HMAC-SHA256`, as the public APIG SDK signers (Python, Java, Go, JS) compute it:
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n
//!                    SignedHeaders \n BodyHash
//! StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(SHA-256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(secret, StringToSign))
//! ```
//!
//! One implementation, used by the `app-auth` plugin to verify callers and by the gateway to
//! sign requests to backends that check a signature key. The digests come from a
//! [`Digests`]: [`Native`] computes them here; the plugin asks the gateway (its `crypto`
//! import), which hashes several times faster than Wasm code can.
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where SHA-256 and HMAC-SHA256 are computed.
pub trait Digests {
    fn sha256(&self, data: &[u8]) -> [u8; 32];
    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> [u8; 32];
}

/// The digests computed in this process (`sha2`, `hmac`).
pub struct Native;

impl Digests for Native {
    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// What the signers leave unencoded: RFC 3986 unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Lower-hex SHA-256, the body hash of a canonical request.
pub fn sha256_hex(d: &impl Digests, data: &[u8]) -> String {
    hex::encode(d.sha256(data))
}

/// The canonical request. `header(name)` gives the value of each signed header (lower-case
/// name); `None` if the request lacks one, which fails the whole signature.
pub fn canonical_request<'a>(
    method: &str,
    path: &str,
    query: &str,
    signed_headers: &[&str],
    header: impl Fn(&str) -> Option<&'a str>,
    body_hash: &str,
) -> Option<String> {
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    canonical_uri(path, &mut out);
    out.push('\n');
    canonical_query(query, &mut out);
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(header(name)?.trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(body_hash);
    Some(out)
}

pub fn string_to_sign(d: &impl Digests, sdk_date: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{sdk_date}\n{}", sha256_hex(d, canonical_request.as_bytes()))
}

/// The hex signature of `string_to_sign` with `secret`.
pub fn sign(d: &impl Digests, secret: &str, string_to_sign: &str) -> String {
    hex::encode(d.hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// Whether `signature_hex` is the signature, compared in constant time.
pub fn verify(d: &impl Digests, secret: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    let mut expected = [0u8; 32];
    hex::decode_to_slice(signature_hex, &mut expected).is_ok()
        && bool::from(d.hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()).ct_eq(&expected))
}

/// The `Authorization` header value.
pub fn authorization(access_key: &str, signed_headers: &[&str], signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={signature}",
        signed_headers.join(";")
    )
}

/// The path, percent-decoded, each segment encoded again, always ending in `/`.
fn canonical_uri(path: &str, out: &mut String) {
    let decoded: Vec<u8> = percent_decode_str(path).collect();
    for (i, segment) in decoded.split(|b| *b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(percent_encoding::percent_encode(segment, UNRESERVED));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
}

/// Keys sorted, each key's values sorted, `key=value` encoded and joined by `&`.
fn canonical_query(query: &str, out: &mut String) {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, UNRESERVED));
        out.push('=');
        out.extend(utf8_percent_encode(v, UNRESERVED));
    }
}

/// `YYYYMMDDTHHMMSSZ` (UTC) to Unix milliseconds.
pub fn parse_sdk_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// Unix seconds to `YYYYMMDDTHHMMSSZ` (UTC).
pub fn format_sdk_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// Civil (proleptic Gregorian) dates and day numbers, after Howard Hinnant's algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_dates_round_trip_and_match_known_instants() {
        assert_eq!(parse_sdk_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_sdk_date("20200229T123456Z"), Some(1_582_979_696_000));
        for secs in [0, 951_782_400, 1_582_979_696, 4_102_444_799] {
            assert_eq!(parse_sdk_date(&format_sdk_date(secs)), Some(secs * 1000));
        }
        assert_eq!(parse_sdk_date("20201301T000000Z"), None);
        assert_eq!(parse_sdk_date("2020-01-01T00:00:00Z"), None);
    }

    #[test]
    fn canonical_forms_encode_and_sort_like_the_signers() {
        let h = |_: &str| Some(" v ");
        let c = canonical_request("GET", "/a%20b/%E4%BD%A0", "b=2&a=1&a=0&k", &["host"], h, "hash").unwrap();
        assert_eq!(c, "GET\n/a%20b/%E4%BD%A0/\na=0&a=1&b=2&k=\nhost:v\n\nhost\nhash");
        assert!(canonical_request("GET", "/", "", &["missing"], |_| None, "h").is_none());
    }

    #[test]
    fn signatures_verify_only_with_the_right_secret() {
        let sts = string_to_sign(&Native, "20200101T000000Z", "canonical");
        let sig = sign(&Native, "secret", &sts);
        assert!(verify(&Native, "secret", &sts, &sig));
        assert!(!verify(&Native, "other", &sts, &sig));
        assert!(!verify(&Native, "secret", &sts, "zz"));
        assert!(!verify(&Native, "secret", &sts, &sig[..62]), "a shorter signature");
    }
}
