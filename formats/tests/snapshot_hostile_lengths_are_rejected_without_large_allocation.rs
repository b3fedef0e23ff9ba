//! Hostile sizes and counts (u32::MAX counts, huge declared lengths, decompression bombs) are
//! rejected with a typed error before anything large is allocated. The test runs under a
//! counting global allocator (the `cap` crate) with a hard limit, and checks the peak
//! allocation of the whole run at the end; it is one test so that no other test's
//! allocations mix in.

mod common;

use std::alloc::System;
use std::io::Write;

use cap::Cap;
use common::*;
use flowstate_formats::fuzzing::{self, repair_snapshot_checksums};
use flowstate_formats::snapshot::SnapshotReader;
use flowstate_formats::{FormatError, ReadLimits, MAX_BLOCK_LEN};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// The most the whole test may have allocated at once.
const PEAK: usize = 1 << 20;

fn decode_with(bytes: &[u8], limits: ReadLimits) -> Result<(), FormatError> {
    fuzzing::decode_snapshot(bytes, limits).map(|_| ())
}

#[track_caller]
fn corrupt(bytes: &[u8], needle: &str) {
    match decode(bytes) {
        Err(e @ FormatError::Corrupt { .. }) | Err(e @ FormatError::TruncatedFile { .. }) => {
            assert!(e.to_string().contains(needle), "expected '{needle}': {e}")
        }
        other => panic!("expected a corrupt or truncated error with '{needle}', got {other:?}"),
    }
}

#[track_caller]
fn limit(result: Result<(), FormatError>, what: &str, expected_limit: u64) {
    match result {
        Err(FormatError::LimitExceeded { what: w, limit, .. }) => {
            assert_eq!(w, what);
            assert_eq!(limit, expected_limit);
        }
        other => panic!("expected LimitExceeded for {what}, got {other:?}"),
    }
}

fn one_block(block: ForgedBlock) -> Vec<u8> {
    forge_snapshot(&golden_meta(), &[block])
}

/// An LZ4 block that expands to `1 + 19 + 255 k + 5` zero bytes from `k + 11` bytes.
fn lz4_bomb(k: usize) -> (Vec<u8>, u32) {
    let mut b = vec![0x1f, 0x00, 0x01, 0x00];
    b.extend(std::iter::repeat_n(0xff, k));
    b.push(0x00);
    b.push(0x50);
    b.extend_from_slice(&[0; 5]);
    (b, (1 + 19 + 255 * k + 5) as u32)
}

/// One zstd frame of `len` zero bytes that records its content size, built without holding
/// the bytes in memory.
fn zstd_bomb(len: u64) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    enc.set_pledged_src_size(Some(len)).unwrap();
    enc.include_contentsize(true).unwrap();
    let zeros = [0u8; 4096];
    for _ in 0..len / 4096 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn hostile_lengths_are_typed_errors_and_allocate_little() {
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + (48 << 20))
        .unwrap();

    // Counts in a payload larger than the bytes left.
    let p = Payload::default()
        .v(0)
        .v(u64::from(u32::MAX))
        .b(b"k")
        .b(b"")
        .b(b"v");
    corrupt(
        &one_block(ForgedBlock::raw(10, p.0, 1)),
        "entry count 4294967295",
    );
    let p = Payload::default()
        .v(1)
        .v(1)
        .b(b"k")
        .b(b"")
        .v(u64::from(u32::MAX));
    corrupt(
        &one_block(ForgedBlock::raw(10, p.0, 1)),
        "list element count",
    );
    let p = Payload::default()
        .v(2)
        .v(1)
        .b(b"k")
        .b(b"")
        .v(1 << 40)
        .b(b"a")
        .b(b"b");
    corrupt(&one_block(ForgedBlock::raw(10, p.0, 1)), "map entry count");
    let p = Payload::default()
        .v(0)
        .v(1)
        .v(u64::from(u32::MAX))
        .v(0)
        .v(0);
    corrupt(
        &one_block(ForgedBlock::raw(10, p.0, 1)),
        "needed 4294967295",
    );
    let p = Payload::default().v(0).v(1).v(u64::MAX).v(0).v(0);
    corrupt(&one_block(ForgedBlock::raw(10, p.0, 1)), "truncated");

    // Declared block sizes beyond the format's maximum or the caller's limit.
    let mut b = ForgedBlock::raw(10, Payload::default().v(0).v(1).b(b"k").b(b"").b(b"v").0, 1);
    b.uncompressed_len = u32::MAX;
    limit(
        decode(&one_block(b.clone())).map(|_| ()),
        "block uncompressed length",
        MAX_BLOCK_LEN.into(),
    );
    b.uncompressed_len = MAX_BLOCK_LEN + 1;
    limit(
        decode(&one_block(b)).map(|_| ()),
        "block uncompressed length",
        MAX_BLOCK_LEN.into(),
    );
    let mut bytes = golden("snapshot_none_v1.bin");
    let kg10 = SnapshotReader::open(&bytes[..], "s")
        .unwrap()
        .location(10)
        .unwrap();
    let at = kg10.offset as usize + 7;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    limit(
        decode(&bytes).map(|_| ()),
        "block stored length",
        MAX_BLOCK_LEN.into(),
    );
    let small = ReadLimits {
        max_block_len: 64,
        ..ReadLimits::default()
    };
    limit(
        decode_with(&golden("snapshot_none_v1.bin"), small),
        "block uncompressed length",
        64,
    );
    let tiny_meta = ReadLimits {
        max_meta_len: 16,
        ..ReadLimits::default()
    };
    limit(
        decode_with(&golden("snapshot_none_v1.bin"), tiny_meta),
        "meta block length",
        16,
    );

    // An LZ4 bomb: honest, it decodes (and is refused for its content); declaring more than
    // LZ4 can produce, it is refused before any allocation; declaring less, it overflows.
    let (bomb, real) = lz4_bomb(1000);
    let block = |declared: u32| ForgedBlock {
        key_group: 10,
        compression: 1,
        uncompressed_len: declared,
        stored: bomb.clone(),
        entries: 1,
    };
    corrupt(&one_block(block(real)), "empty state section");
    corrupt(&one_block(block(MAX_BLOCK_LEN)), "cannot expand");
    corrupt(
        &one_block(block(real - 1)),
        "lz4 payload does not decompress",
    );
    corrupt(&one_block(block(real + 1)), "decompresses to");

    // A zstd bomb: 64 MiB of zeros in about 2 KiB.
    let bomb = zstd_bomb(64 << 20);
    assert!(bomb.len() < 8192, "{} bytes", bomb.len());
    let block = |declared: u32| ForgedBlock {
        key_group: 10,
        compression: 2,
        uncompressed_len: declared,
        stored: bomb.clone(),
        entries: 1,
    };
    corrupt(&one_block(block(1 << 20)), "content size 67108864 differs");
    let one_mib = ReadLimits {
        max_block_len: 1 << 20,
        ..ReadLimits::default()
    };
    limit(
        decode_with(&one_block(block(64 << 20)), one_mib),
        "block uncompressed length",
        1 << 20,
    );
    // A frame followed by a second one, or cut short, is refused before decompressing.
    let mut two = bomb.clone();
    two.extend_from_slice(&bomb);
    let mut b = block(1 << 20);
    b.stored = two;
    corrupt(&one_block(b), "not exactly one well-formed frame");
    let mut b = block(1 << 20);
    b.stored.truncate(bomb.len() - 3);
    corrupt(&one_block(b), "not exactly one well-formed frame");

    // Meta block: a state count or a name length beyond what the bytes hold.
    let mut meta = Vec::new();
    meta.extend_from_slice(&128u32.to_le_bytes());
    meta.extend_from_slice(&0u16.to_le_bytes());
    meta.extend_from_slice(&3u16.to_le_bytes());
    let head = Payload(meta).b(b"string");
    let mut with_count = head.0.clone();
    with_count.extend_from_slice(&1u32.to_le_bytes());
    let huge_count = Payload(with_count.clone()).v(u64::from(u32::MAX));
    corrupt(
        &forge_with_raw_meta(&huge_count.0, 0, 3),
        "state count 4294967295",
    );
    let mut huge_name = Payload(with_count).v(1).v(1 << 40);
    huge_name.0.extend_from_slice(&[0; 32]);
    let bytes = forge_with_raw_meta(&huge_name.0, 0, 3);
    limit(decode(&bytes).map(|_| ()), "state name length", 65_535);

    // Footer and index: lengths and offsets that point outside the file, a total that lies.
    let original = golden("snapshot_none_v1.bin");
    let f = original.len() - 56;
    for (at, value) in [
        (f + 8, u64::from(u32::MAX)),  // meta length
        (f + 24, u64::from(u32::MAX)), // index length
    ] {
        let mut bytes = original.clone();
        bytes[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
        repair_snapshot_checksums(&mut bytes);
        corrupt(&bytes, "do not fit before the footer");
    }
    let mut bytes = original.clone();
    bytes[f + 16..f + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    repair_snapshot_checksums(&mut bytes);
    corrupt(&bytes, "do not fit before the footer");
    let mut bytes = original.clone();
    bytes[f + 32..f + 40].copy_from_slice(&u64::MAX.to_le_bytes());
    repair_snapshot_checksums(&mut bytes);
    corrupt(&bytes, "the footer says 18446744073709551615");
    let index_at = u64::from_le_bytes(original[f + 16..f + 24].try_into().unwrap()) as usize;
    for (field, needle) in [
        (0, "key group 10 starts at"),
        (8, "key group 10 ("),
        (16, "the footer says 22"),
    ] {
        let mut bytes = original.clone();
        let at = index_at + 4 + field;
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        repair_snapshot_checksums(&mut bytes);
        corrupt(&bytes, needle);
    }

    let peak = ALLOCATOR.max_allocated();
    assert!(peak < PEAK, "peak allocation {peak} bytes");
}
