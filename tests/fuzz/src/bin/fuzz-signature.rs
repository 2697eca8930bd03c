//! AFL++ entry point for [`wasmgate_fuzz::signature`] (docs/SECURITY.md says how to run it).
fn main() {
    afl::fuzz!(|data: &[u8]| wasmgate_fuzz::signature(data));
}
