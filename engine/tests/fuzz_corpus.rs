//! Replays the corpora of the fuzz targets under `fuzz/` (seeds and every crash found, which
//! are added to the corpus as regressions) as ordinary tests, so CI on a stable toolchain checks
//! them on every run.

use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus directory {} is readable: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry of the corpus").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("a corpus file is readable");
            (p, bytes)
        })
        .collect()
}

#[test]
fn codec_decode_corpus_replays_without_failure() {
    let inputs = corpus("codec_decode");
    assert!(inputs.len() >= 10, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| flowstate::fuzzing::check_codec_decode(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn codec_decode_property_catches_a_lying_round_trip() {
    // The property is not vacuous: every seed that decodes is checked against its re-encoding,
    // and a truncated input of each type is an error, not a panic.
    for (_, bytes) in corpus("codec_decode") {
        for cut in 0..bytes.len() {
            flowstate::fuzzing::check_codec_decode(&bytes[..cut]);
        }
    }
}

#[test]
fn state_ops_corpus_replays_without_failure() {
    let inputs = corpus("state_ops");
    assert!(inputs.len() >= 5, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| flowstate::fuzzing::check_state_ops(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn state_ops_property_holds_on_random_sequences() {
    // A deterministic stream of random inputs, beyond the corpus (a poor man's fuzzer on stable).
    let mut x: u64 = 0x5eed;
    for _ in 0..200 {
        let len = 64 + (x % 512) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        flowstate::fuzzing::check_state_ops(&bytes);
    }
}
