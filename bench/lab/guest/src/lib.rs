//! The lab policy: a CORS-like check (method, path, `origin`) behind the three request shapes
//! of `bench/lab/wit/lab.wit`, so that only the shape differs between them.

wit_bindgen::generate!({ path: "../wit", world: "lab" });

use exports::wasmgate::lab::policy::Guest;
use wasmgate::lab::types::{Action, HeaderOp, Request, RequestHandle};

const ALLOWED: &str = "https://app.example.com";

fn decide(method: &str, path: &str, origin: Option<&str>) -> Action {
    if method == "OPTIONS" || !path.starts_with('/') {
        return Action::Respond(204);
    }
    match origin {
        Some(o) if o == ALLOWED => Action::Continue(vec![
            HeaderOp::Set(("access-control-allow-origin".into(), o.into())),
            HeaderOp::Set(("vary".into(), "origin".into())),
        ]),
        _ => Action::Respond(403),
    }
}

/// Reads the packed request in place: `u16` little-endian lengths, then bytes.
struct Packed<'a>(&'a [u8]);

impl<'a> Packed<'a> {
    fn u16(&mut self) -> usize {
        let (n, rest) = self.0.split_at(2);
        self.0 = rest;
        u16::from_le_bytes([n[0], n[1]]) as usize
    }

    fn str(&mut self) -> &'a str {
        let n = self.u16();
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        std::str::from_utf8(s).unwrap_or("")
    }
}

struct Lab;

impl Guest for Lab {
    fn on_request_record(r: Request) -> Action {
        let origin = r.headers.iter().find(|(n, _)| n == "origin").map(|(_, v)| v.as_str());
        decide(&r.method, &r.path, origin)
    }

    fn on_request_packed(buf: Vec<u8>) -> Action {
        let mut p = Packed(&buf);
        let (method, path) = (p.str(), p.str());
        let mut origin = None;
        for _ in 0..p.u16() {
            let (name, value) = (p.str(), p.str());
            if name == "origin" && origin.is_none() {
                origin = Some(value);
            }
        }
        decide(method, path, origin)
    }

    fn on_request_handle(r: &RequestHandle) -> Action {
        let (method, path) = (r.method(), r.path());
        decide(&method, &path, r.header("origin").as_deref())
    }
}

export!(Lab);
