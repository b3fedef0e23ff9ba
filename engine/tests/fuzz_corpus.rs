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
    // The seeds made before LSM restores became a share of the inputs still restore into LSM
    // backends (a byte past their last operation picks that); the heap seeds do not.
    for (path, bytes) in &inputs {
        let heap = path.to_string_lossy().contains("heap");
        assert_eq!(
            flowstate::fuzzing::lsm_input(bytes),
            !heap,
            "{} restores into {} backends",
            path.display(),
            if heap { "heap" } else { "LSM" }
        );
    }
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

#[test]
fn metadata_decode_corpus_replays_without_failure() {
    let inputs = corpus("metadata_decode");
    assert!(inputs.len() >= 20, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result =
            std::panic::catch_unwind(|| flowstate_formats::fuzzing::check_metadata_decode(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn metadata_decode_seeds_reach_past_the_checksum() {
    use flowstate_formats::checkpoint::{CheckpointMetadataRecord, KeyedStateHandleRecord};
    use flowstate_formats::fuzzing::repair_checkpoint_checksum;
    use flowstate_formats::FormatError;

    // The property is not vacuous: the golden seeds decode (so their re-encoding is compared),
    // and the damaged seeds with a repaired checksum fail in the structure, not in the CRC.
    let decoded = |name: &str| {
        let bytes = corpus("metadata_decode")
            .into_iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("seed {name}"))
            .1;
        let mut rest = bytes[1..].to_vec();
        if bytes[0] & 1 == 1 {
            repair_checkpoint_checksum(&mut rest);
        }
        rest
    };
    assert!(CheckpointMetadataRecord::decode(&decoded("metadata_golden"), "m").is_ok());
    assert!(CheckpointMetadataRecord::decode(&decoded("savepoint_two_operators"), "m").is_ok());
    for seed in [
        "metadata_kind_2",
        "metadata_task_count_max",
        "metadata_invalid_utf8_operator",
    ] {
        let err = CheckpointMetadataRecord::decode(&decoded(seed), "m").unwrap_err();
        assert!(
            !matches!(err, FormatError::ChecksumMismatch { .. }),
            "{seed}: {err}"
        );
    }
    for seed in [
        "keyed_path_dotdot",
        "keyed_absolute_path",
        "keyed_unknown_kind",
        "keyed_inverted_range",
    ] {
        let err = KeyedStateHandleRecord::decode(&decoded(seed), "k").unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{seed}: {err}");
    }
    // Every truncation of every seed is an error or a value, never a panic.
    for (_, bytes) in corpus("metadata_decode") {
        for cut in 0..bytes.len() {
            flowstate_formats::fuzzing::check_metadata_decode(&bytes[..cut]);
        }
    }
}

/// The seed of `target` named `name`, with its mode byte applied: the bytes the property
/// decodes.
fn prepared_seed(target: &str, name: &str, repair: fn(&mut [u8])) -> Vec<u8> {
    let bytes = corpus(target)
        .into_iter()
        .find(|(p, _)| p.file_name().is_some_and(|f| f == name))
        .unwrap_or_else(|| panic!("seed {target}/{name}"))
        .1;
    let mut rest = bytes[1..].to_vec();
    if bytes[0] & 1 == 1 {
        repair(&mut rest);
    }
    rest
}

#[test]
fn snapshot_decode_corpus_replays_without_failure() {
    let inputs = corpus("snapshot_decode");
    assert!(inputs.len() >= 20, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result =
            std::panic::catch_unwind(|| flowstate_formats::fuzzing::check_snapshot_decode(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn snapshot_decode_seeds_reach_past_the_checksums() {
    use flowstate_formats::fuzzing::{decode_snapshot, fuzz_limits, repair_snapshot_checksums};
    use flowstate_formats::FormatError;

    // The property is not vacuous: the golden seeds decode (so their re-encoding is compared),
    // and the damaged seeds with repaired checksums fail in the structure, not in a CRC.
    let seed = |name| prepared_seed("snapshot_decode", name, repair_snapshot_checksums);
    for name in ["golden_none", "golden_lz4_repaired", "golden_zstd"] {
        let (_, entries) = decode_snapshot(&seed(name), fuzz_limits()).unwrap();
        assert_eq!(entries.len(), 22, "{name}");
    }
    for name in [
        "repaired_unknown_state_index",
        "repaired_entry_count_too_large",
        "repaired_uncompressed_len_max",
        "repaired_compression_code_9",
        "repaired_block_key_group_11",
        "repaired_total_entries_max",
        "repaired_meta_state_kind_7",
        "swapped_key_groups_12_17_repaired",
        "zstd_uncompressed_len_plus_one_repaired",
    ] {
        let err = decode_snapshot(&seed(name), fuzz_limits()).unwrap_err();
        assert!(
            !matches!(err, FormatError::ChecksumMismatch { .. }),
            "{name}: {err}"
        );
    }
    // Every truncation of every seed is an error or content, never a panic.
    for (_, bytes) in corpus("snapshot_decode") {
        for cut in (0..bytes.len()).step_by(7) {
            flowstate_formats::fuzzing::check_snapshot_decode(&bytes[..cut]);
        }
    }
}

#[test]
fn operator_state_decode_corpus_replays_without_failure() {
    let inputs = corpus("operator_state_decode");
    assert!(inputs.len() >= 12, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| {
            flowstate_formats::fuzzing::check_operator_state_decode(&bytes)
        });
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn operator_state_decode_seeds_reach_past_the_checksums() {
    use flowstate_formats::fuzzing::{
        decode_operator_state, fuzz_limits, repair_operator_state_checksums,
    };
    use flowstate_formats::FormatError;

    let seed = |name| {
        prepared_seed(
            "operator_state_decode",
            name,
            repair_operator_state_checksums,
        )
    };
    assert_eq!(
        decode_operator_state(&seed("golden"), fuzz_limits())
            .unwrap()
            .len(),
        3
    );
    assert!(decode_operator_state(&seed("no_states"), fuzz_limits())
        .unwrap()
        .is_empty());
    for name in [
        "repaired_count_max",
        "repaired_block_len_max",
        "repaired_mode_7",
        "repaired_map_key_order",
        "repaired_list_count_large",
    ] {
        let err = decode_operator_state(&seed(name), fuzz_limits()).unwrap_err();
        assert!(
            !matches!(err, FormatError::ChecksumMismatch { .. }),
            "{name}: {err}"
        );
    }
    for (_, bytes) in corpus("operator_state_decode") {
        for cut in 0..bytes.len() {
            flowstate_formats::fuzzing::check_operator_state_decode(&bytes[..cut]);
        }
    }
}

#[test]
fn table_decode_corpus_replays_without_failure() {
    let inputs = corpus("table_decode");
    assert!(inputs.len() >= 30, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result =
            std::panic::catch_unwind(|| flowstate_formats::fuzzing::check_table_decode(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn table_decode_seeds_reach_past_the_checksums() {
    use flowstate_formats::fuzzing::{fuzz_limits, repair_table_checksums};
    use flowstate_formats::table::{TableReadOptions, TableReader};
    use flowstate_formats::FormatError;

    // The property is not vacuous: the golden seeds decode (so their answers and re-encoding are
    // compared), and the damaged seeds fail in the structure, not in a CRC.
    let seed = |name| prepared_seed("table_decode", name, repair_table_checksums);
    let verify = |bytes: &[u8]| {
        let options = TableReadOptions {
            limits: fuzz_limits(),
            ..TableReadOptions::default()
        };
        TableReader::open_with(bytes, "t", options).and_then(|r| r.verify())
    };
    for (name, entries) in [
        ("golden_none", 84),
        ("golden_lz4_repaired", 84),
        ("golden_zstd", 84),
        ("golden_tombstones_only", 0),
        ("forged_identity", 84),
    ] {
        assert_eq!(verify(&seed(name)).unwrap(), entries, "{name}");
    }
    for name in [
        "repaired_restart_count_max",
        "repaired_entry_kind_3",
        "repaired_key_byte",
        "repaired_block_type_1",
        "repaired_compression_code_9",
        "repaired_uncompressed_len_max",
        "repaired_filter_probes_0",
        "repaired_properties_entries",
        "repaired_tombstone_inverted",
        "repaired_footer_index_len_max",
        "repaired_footer_filter_absent",
        "lz4_data_flip_repaired",
        "swapped_data_blocks",
        "forged_index_count_max",
        "forged_unshared_len_huge",
        "forged_lz4_bomb",
        "forged_tombstone_count_huge",
    ] {
        let err = verify(&seed(name)).unwrap_err();
        assert!(
            !matches!(err, FormatError::ChecksumMismatch { .. }),
            "{name}: {err}"
        );
    }
    // Every truncation of every seed is an error or content, never a panic.
    for (_, bytes) in corpus("table_decode") {
        for cut in (0..bytes.len()).step_by(7) {
            flowstate_formats::fuzzing::check_table_decode(&bytes[..cut]);
        }
    }
}

#[test]
fn manifest_decode_corpus_replays_without_failure() {
    let inputs = corpus("manifest_decode");
    assert!(inputs.len() >= 20, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result =
            std::panic::catch_unwind(|| flowstate_formats::fuzzing::check_manifest_decode(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn manifest_decode_seeds_reach_past_the_checksum() {
    use flowstate_formats::fuzzing::repair_manifest_framing;
    use flowstate_formats::manifest::Manifest;
    use flowstate_formats::FormatError;

    // The property is not vacuous: the golden seeds decode (so their re-encoding is compared),
    // and the seeds that break a rule behind a valid CRC fail in the body, not in the CRC.
    let seed = |name| {
        let bytes = corpus("manifest_decode")
            .into_iter()
            .find(|(p, _)| p.file_name().is_some_and(|f| f == name))
            .unwrap_or_else(|| panic!("seed manifest_decode/{name}"))
            .1;
        let mut rest = bytes[1..].to_vec();
        if bytes[0] & 1 == 1 {
            repair_manifest_framing(&mut rest, bytes[0] & 2 == 2);
        }
        rest
    };
    assert_eq!(
        Manifest::decode(&seed("golden"), "M").unwrap().tables.len(),
        2
    );
    assert_eq!(
        Manifest::decode(&seed("golden_crc_flipped_repaired"), "M").unwrap(),
        Manifest::decode(&seed("golden"), "M").unwrap()
    );
    assert!(Manifest::decode(&seed("empty_manifest"), "M")
        .unwrap()
        .tables
        .is_empty());
    for name in [
        "repaired_level_16",
        "repaired_id_repeated",
        "repaired_id_not_below_next",
        "repaired_name_slash",
        "repaired_name_dotdot",
        "repaired_name_empty",
        "repaired_name_bad_utf8",
        "repaired_smallest_above_largest",
        "repaired_count_max",
        "repaired_count_above_tables",
        "repaired_key_len_max",
        "repaired_key_len_past_end",
        "repaired_name_len_past_end",
        "repaired_trailing_byte",
        "truncated_repaired_length",
    ] {
        let err = Manifest::decode(&seed(name), "M").unwrap_err();
        assert!(
            !matches!(err, FormatError::ChecksumMismatch { .. }),
            "{name}: {err}"
        );
    }
    // Every truncation of every seed is an error or a manifest, never a panic.
    for (_, bytes) in corpus("manifest_decode") {
        for cut in 0..bytes.len() {
            flowstate_formats::fuzzing::check_manifest_decode(&bytes[..cut]);
        }
    }
}

#[test]
fn checkpoint_dir_corpus_replays_without_failure() {
    let inputs = corpus("checkpoint_dir");
    assert!(inputs.len() >= 12, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| flowstate::fuzzing::check_checkpoint_dir(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn checkpoint_dir_property_holds_on_random_edits() {
    // A deterministic stream of random edit sequences, beyond the corpus; every prefix of
    // every seed too.
    for (_, bytes) in corpus("checkpoint_dir") {
        for cut in 0..bytes.len() {
            flowstate::fuzzing::check_checkpoint_dir(&bytes[..cut]);
        }
    }
    let mut x: u64 = 0xc4ec;
    for _ in 0..300 {
        let len = 1 + (x % 48) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        flowstate::fuzzing::check_checkpoint_dir(&bytes);
    }
}

#[test]
fn crash_recovery_corpus_replays_without_failure() {
    let inputs = corpus("crash_recovery");
    assert!(inputs.len() >= 10, "the seed corpus is present");
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| flowstate::fuzzing::check_crash_recovery(&bytes));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn crash_recovery_holds_at_every_failure_point_of_a_seed() {
    // The seed's operations with a crash at every mutating storage operation, for a heap and
    // an LSM backend, each crash mode, one and two retained checkpoints.
    let seed = corpus("crash_recovery")
        .into_iter()
        .find(|(p, _)| p.ends_with("heap_no_fault"))
        .expect("seed heap_no_fault")
        .1;
    for config in [0x00u8, 0x0A, 0x18, 0x01, 0x0B] {
        let step = if config & 1 == 1 { 3 } else { 1 };
        for fail_from in (1..=160u16).step_by(step) {
            let mut input = seed.clone();
            input[0] = config;
            input[1..3].copy_from_slice(&fail_from.to_le_bytes());
            flowstate::fuzzing::check_crash_recovery(&input);
        }
    }
}
