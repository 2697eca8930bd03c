//! `wasmgate:plugin/crypto`: SHA-256 and HMAC-SHA256 for plugins, computed natively (the
//! `sha2` crate picks the CPU's SHA extensions at run time), so a signature check does not
//! hash in Wasm. Stateless: nothing to grant or key by binding.

use crate::HostState;
use crate::bindings::wasmgate::plugin::crypto::{Digest, Host};
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn digest(bytes: [u8; 32]) -> Digest {
    let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    Digest { a: word(0), b: word(1), c: word(2), d: word(3) }
}

impl Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> Digest {
        use sha2::Digest as _;
        digest(Sha256::digest(&data).into())
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(&data);
        digest(mac.finalize().into_bytes().into())
    }
}
