//! CI's smoke of the fuzz targets: each runs over its corpus (`corpus/<target>/`: the seeds
//! and whatever AFL++ runs found worth keeping) and a few thousand mutations of it. A panic
//! or a broken invariant fails the test with the input that did it. The long runs are AFL++'s
//! (docs/SECURITY.md); this keeps the targets building and their known inputs passing.

use std::path::Path;

/// Mutations per corpus file: bytes flipped, inserted, removed, lines swapped, halves spliced.
const MUTATIONS: usize = 400;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    inputs
}

/// xorshift64: the same mutations on every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.next() % n }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"..", b"%2e", b"%2F", b";", b"\n", b"\r", b":", b"{", b"}", b"+", b"\xff", b"\0", b"%", b"/", b"~",
    b"&", b"=",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            2 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.below(out.len() + 1);
                out.insert(i.min(out.len()), rng.next() as u8);
            }
        }
    }
    out
}

fn smoke(target: &str, run: fn(&[u8])) {
    let inputs = corpus(target);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for input in &inputs {
        run(input);
        for _ in 0..MUTATIONS {
            let other = &inputs[rng.below(inputs.len())];
            let mutated = mutate(&mut rng, input, other);
            let outcome = std::panic::catch_unwind(|| run(&mutated));
            assert!(outcome.is_ok(), "{target} failed on {:?}", String::from_utf8_lossy(&mutated));
        }
    }
}

#[test]
fn request() {
    smoke("request", wasmgate_fuzz::request);
}

#[test]
fn config() {
    smoke("config", wasmgate_fuzz::config);
}

#[test]
fn signature() {
    smoke("signature", wasmgate_fuzz::signature);
}

#[test]
fn openapi() {
    smoke("openapi", wasmgate_fuzz::openapi);
}

#[test]
fn header_ops() {
    smoke("header-ops", wasmgate_fuzz::header_ops);
}
