//! The request path routing and the backend see: dot-segments removed (RFC 3986 §5.2.4),
//! so `/demo/../secret` cannot match the `/demo` API and then reach the backend's `/secret`
//! without `/secret`'s policies.
//!
//! Dot-segments count written raw or percent-encoded (`%2e`), since a backend that decodes
//! before normalising would see them; `..;x` and `.;x` (dot-segments with path parameters,
//! which Tomcat and Jetty treat as `..` and `.`) are refused, as are encoded slashes and
//! backslashes (`%2F`, `%5C`) unless the operator keeps them (`gateway.encoded_slashes`):
//! the gateway cannot know whether a backend decodes them into separators.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodedSlashes {
    /// 400 (Apache's `AllowEncodedSlashes Off`).
    #[default]
    Reject,
    /// Route and forward them as they are, never decoded (for APIs whose ids hold slashes).
    Keep,
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has a dot-segment with parameters (`..;` or `.;`)")]
    DotSegmentWithParameters,
    #[error("the path has an encoded slash or backslash (%2F, %5C)")]
    EncodedSlash,
}

/// `.` or `..` (either written with `%2e`), if `segment` is one.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut n = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        n += 1;
    }
    (1..=2).contains(&n).then_some(n)
}

/// The path with its dot-segments removed; borrowed when it has none (the common case
/// costs one scan).
pub fn normalize(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.contains("/.") && !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    if slashes == EncodedSlashes::Reject {
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return Err(PathError::EncodedSlash);
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let mut changed = false;
    // The first element is what precedes the leading `/` (empty for an origin-form path).
    let mut segments = path.split('/');
    let first = segments.next().unwrap_or("");
    let mut last_was_dot = false;
    for segment in segments {
        let name = segment.split(';').next().unwrap_or("");
        match (dots(name), name.len() == segment.len()) {
            (Some(_), false) => return Err(PathError::DotSegmentWithParameters),
            (Some(1), true) => {
                changed = true;
                last_was_dot = true;
            }
            (Some(_), true) => {
                changed = true;
                last_was_dot = true;
                out.pop();
            }
            _ => {
                last_was_dot = false;
                out.push(segment);
            }
        }
    }
    if !changed {
        return Ok(Cow::Borrowed(path));
    }
    // `/a/b/..` is `/a/`: a trailing dot-segment leaves the directory's slash.
    if last_was_dot {
        out.push("");
    }
    let mut normalized = String::with_capacity(path.len());
    normalized.push_str(first);
    for segment in out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path, EncodedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_are_removed_raw_or_encoded() {
        for (path, want) in [
            ("/demo/x", "/demo/x"),
            ("/demo/../secret", "/secret"),
            ("/demo/%2e%2e/secret", "/secret"),
            ("/demo/%2E./secret", "/secret"),
            ("/demo/x/../../secret", "/secret"),
            ("/demo/./x", "/demo/x"),
            ("/demo/x/..", "/demo/"),
            ("/demo/x/.", "/demo/x/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/..", "/"),
            ("/demo/.hidden/..x/x..", "/demo/.hidden/..x/x.."),
            ("/demo/%41", "/demo/%41"),
            ("/demo/...", "/demo/..."),
        ] {
            assert_eq!(n(path).as_deref(), Ok(want), "{path}");
        }
        assert!(matches!(normalize("/a/b", EncodedSlashes::Reject), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/%41", EncodedSlashes::Reject), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn parameters_on_dot_segments_and_encoded_slashes_are_refused() {
        for path in ["/demo/..;/secret", "/demo/..;x=1/secret", "/demo/.;/x", "/demo/%2e%2e;/secret"] {
            assert_eq!(n(path), Err(PathError::DotSegmentWithParameters), "{path}");
        }
        assert_eq!(n("/demo/a;b=1/c").as_deref(), Ok("/demo/a;b=1/c"));
        for path in ["/demo/..%2fsecret", "/demo/a%2Fb", "/demo/..%5csecret"] {
            assert_eq!(n(path), Err(PathError::EncodedSlash), "{path}");
        }
        assert_eq!(normalize("/repos/a%2Fb", EncodedSlashes::Keep).as_deref(), Ok("/repos/a%2Fb"));
    }
}
