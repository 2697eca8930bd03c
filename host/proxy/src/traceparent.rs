//! W3C Trace Context: the gateway joins the caller's trace (`traceparent`) or starts one,
//! and tells the backend, with a span id of its own as the parent.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::io::Write;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The caller's span, when the request came with a trace.
    pub parent_id: Option<u64>,
    /// The gateway's hop: the parent of the backend's span.
    pub span_id: u64,
    pub flags: u8,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// The caller's trace, if its `traceparent` is valid (version 00, or a later version read
    /// as 00 does); else a new trace, sampled.
    pub fn of(headers: &HeaderMap) -> TraceContext {
        let span_id = fastrand::u64(1..);
        let parsed = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(|v| {
            let mut parts = v.trim().split('-');
            let (version, trace, parent, flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let version = hex::<1>(version)?[0];
            // Version ff is forbidden; 00 has exactly four parts; later versions may add more.
            if version == 0xff || (version == 0 && parts.next().is_some()) {
                return None;
            }
            let trace = u128::from_be_bytes(hex::<16>(trace)?);
            let parent = u64::from_be_bytes(hex::<8>(parent)?);
            (trace != 0 && parent != 0).then_some((trace, parent, hex::<1>(flags)?[0]))
        });
        match parsed {
            Some((trace_id, parent, flags)) => {
                TraceContext { trace_id, parent_id: Some(parent), span_id, flags }
            }
            None => TraceContext { trace_id: fastrand::u128(1..), parent_id: None, span_id, flags: 0x01 },
        }
    }

    /// `00-{trace}-{span}-{flags}`, the header the backend gets.
    pub fn header(&self) -> HeaderValue {
        // Written in place: this runs for every backend request.
        let mut v = [0u8; 55];
        let mut w = &mut v[..];
        write!(w, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags & 0x01)
            .expect("55 bytes");
        HeaderValue::from_bytes(&v).expect("hex digits and dashes")
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_valid_traceparent_is_joined_and_anything_else_starts_a_trace() {
        let joined = TraceContext::of(&with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(joined.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(joined.span_id, 0x00f067aa0ba902b7, "the gateway's own span");
        let sent = joined.header();
        let sent = sent.to_str().unwrap();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
        assert_eq!(TraceContext::of(&with(sent)).trace_id, joined.trace_id);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let fresh = TraceContext::of(&with(bad));
            assert_ne!(fresh.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(fresh.flags, 1);
        }
        // A later version's extra fields are ignored.
        let later = TraceContext::of(&with("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"));
        assert_eq!((later.trace_id_hex().as_str(), later.flags), ("4bf92f3577b34da6a3ce929d0e0e4736", 0));
    }
}
