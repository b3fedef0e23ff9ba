//! Hostile sizes and counts in a table file (u32::MAX lengths in the footer, huge counts in the
//! index, properties, range tombstones and data blocks, declared block sizes past the limits,
//! decompression bombs) are rejected with a typed error before anything large is allocated.
//! The test runs under a counting global allocator (the `cap` crate) with a hard limit, and
//! checks the peak allocation of the whole run at the end; it is one test so that no other
//! test's allocations mix in.

mod table_common;

use std::alloc::System;
use std::io::Write;

use cap::Cap;
use flowstate_formats::fuzzing::{self, repair_table_checksums};
use flowstate_formats::table::FOOTER_LEN;
use flowstate_formats::{FormatError, ReadLimits, MAX_BLOCK_LEN, MAX_META_LEN};
use table_common::*;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// The most the whole test may have allocated at once.
const PEAK: usize = 2 << 20;

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

fn decode_with(bytes: &[u8], limits: ReadLimits) -> Result<(), FormatError> {
    fuzzing::decode_table(bytes, limits).map(|_| ())
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

fn with_data_block(base: &Parts, frame: Frame) -> Vec<u8> {
    let mut p = base.clone();
    p.data[0] = frame;
    p.assemble(true)
}

#[test]
fn hostile_lengths_are_typed_errors_and_allocate_little() {
    // The zstd bomb is built before the limit is set: building it is not what is tested.
    let zbomb = zstd_bomb(64 << 20);
    assert!(zbomb.len() < 8192, "{} bytes", zbomb.len());
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + (48 << 20))
        .unwrap();
    let base_bytes = small_table(40);
    let base = Parts::split(&base_bytes);
    assert!(decode(&base_bytes).is_ok());
    assert!(base.data.len() >= 3);

    // Footer handles that point outside the file or overlap: refused by the layout check.
    let f = base_bytes.len() - FOOTER_LEN as usize;
    for (at, width, value) in [
        (f + 8, 4, u64::from(u32::MAX)),  // index length
        (f, 8, u64::MAX),                 // index offset
        (f + 32, 8, u64::MAX),            // properties offset
        (f + 40, 4, u64::from(u32::MAX)), // properties length
        (f + 16, 8, 1),                   // filter offset, inside the header
        (f + 24, 4, u64::from(u32::MAX)), // filter length
    ] {
        let mut bytes = base_bytes.clone();
        bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        repair_table_checksums(&mut bytes);
        let e = decode(&bytes).unwrap_err();
        assert!(
            matches!(e, FormatError::Corrupt { .. }),
            "field at {at}: {e}"
        );
    }

    // Frame lengths: the declared uncompressed length past the format's limit or the caller's,
    // a stored length that disagrees with the frame.
    let mut frame = base.data[0].clone();
    frame.uncompressed_len = u32::MAX;
    limit(
        decode(&with_data_block(&base, frame)).map(|_| ()),
        "block uncompressed length",
        MAX_BLOCK_LEN.into(),
    );
    let small = ReadLimits {
        max_block_len: 16,
        ..ReadLimits::default()
    };
    limit(decode_with(&base_bytes, small), "block stored length", 16);
    let tiny_meta = ReadLimits {
        max_meta_len: 8,
        ..ReadLimits::default()
    };
    limit(
        decode_with(&base_bytes, tiny_meta),
        "block stored length",
        8,
    );
    let mut bytes = base_bytes.clone();
    bytes[12 + 6..12 + 10].copy_from_slice(&u32::MAX.to_le_bytes());
    repair_table_checksums(&mut bytes);
    assert!(decode(&bytes).is_err());

    // Data block payloads: restart counts, key and value lengths beyond the bytes there are.
    for (payload, needle) in [
        (Payload::default().u32(u32::MAX).0, "do not fit"),
        (
            Payload::default()
                .v(0)
                .v(1)
                .v(0)
                .raw(b"k")
                .u32(0)
                .u32(u32::MAX)
                .0,
            "do not fit",
        ),
        (
            Payload::default().v(0).v(1 << 40).v(0).u32(0).u32(1).0,
            "needed 1099511627776 bytes",
        ),
        (
            Payload::default()
                .v(0)
                .v(1)
                .v(u64::MAX >> 2 << 2)
                .raw(b"k")
                .u32(0)
                .u32(1)
                .0,
            "truncated",
        ),
        (
            Payload::default()
                .v(0)
                .v(u64::from(u32::MAX))
                .v(0)
                .u32(0)
                .u32(1)
                .0,
            "needed 4294967295 bytes",
        ),
        (
            Payload::default().v(0).v(100_000).v(0).u32(0).u32(1).0,
            "truncated",
        ),
    ] {
        let bytes = with_data_block(&base, Frame::raw(0, payload));
        match decode(&bytes) {
            Err(e) => assert!(e.to_string().contains(needle), "expected '{needle}': {e}"),
            Ok(_) => panic!("expected an error with '{needle}'"),
        }
    }

    // An LZ4 bomb: declaring more than LZ4 can produce, refused before any allocation; honest,
    // it decodes (and is refused for its content); declaring less, it overflows.
    let (bomb, real) = lz4_bomb(1000);
    let block = |declared: u32| Frame {
        block_type: 0,
        compression: 1,
        uncompressed_len: declared,
        stored: bomb.clone(),
    };
    corrupt(
        &with_data_block(&base, block(MAX_BLOCK_LEN)),
        "cannot expand",
    );
    corrupt(&with_data_block(&base, block(real)), "restart points");
    corrupt(
        &with_data_block(&base, block(real - 1)),
        "lz4 payload does not decompress",
    );
    corrupt(&with_data_block(&base, block(real + 1)), "decompresses to");

    // A zstd bomb: 64 MiB of zeros in a few KiB, refused by the caller's limit, or by the
    // frame's recorded size when it declares less.
    let zblock = |declared: u32| Frame {
        block_type: 0,
        compression: 2,
        uncompressed_len: declared,
        stored: zbomb.clone(),
    };
    let one_mib = ReadLimits {
        max_block_len: 1 << 20,
        ..ReadLimits::default()
    };
    limit(
        decode_with(&with_data_block(&base, zblock(64 << 20)), one_mib),
        "block uncompressed length",
        1 << 20,
    );
    corrupt(
        &with_data_block(&base, zblock(1 << 20)),
        "content size 67108864 differs",
    );

    // The index: a count beyond its bytes, a handle beyond the data region, a block length
    // beyond the limit.
    let mut p = base.clone();
    p.index = Frame::raw(1, Payload::default().v(u64::from(u32::MAX)).0);
    corrupt(&p.assemble(false), "index entry count 4294967295");
    let mut p = base.clone();
    p.index = Frame::raw(1, Payload::default().v(1).b(b"k").v(12).v(u64::MAX).0);
    let e = decode(&p.assemble(false)).unwrap_err();
    assert!(matches!(e, FormatError::LimitExceeded { .. }), "{e}");
    let mut p = base.clone();
    p.index = Frame::raw(1, Payload::default().v(1).b(b"k").v(u64::MAX).v(20).0);
    corrupt(&p.assemble(false), "data block 0 at 18446744073709551615");

    // The properties: counts that contradict each other, a key or name length beyond the
    // bytes, a user property count beyond them.
    for (payload, needle) in [
        (
            Payload::default()
                .v(1)
                .v(u64::MAX)
                .v(u64::MAX)
                .v(0)
                .v(1)
                .v(0)
                .v(0)
                .0,
            "deletes",
        ),
        (
            Payload::default()
                .v(1)
                .v(0)
                .v(0)
                .v(0)
                .v(1)
                .v(0)
                .v(0)
                .v(1 << 40)
                .0,
            "truncated",
        ),
        (
            Payload::default()
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(1)
                .v(1)
                .raw(&[0])
                .v(0)
                .v(1 << 40)
                .0,
            "exceeds the limit",
        ),
        (
            Payload::default()
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(0)
                .v(1)
                .v(1)
                .raw(&[0])
                .v(0)
                .v(0)
                .v(1 << 50)
                .0,
            "user property count",
        ),
    ] {
        let mut p = base.clone();
        p.properties = Frame::raw(3, payload);
        match decode(&p.assemble(false)) {
            Err(e) => assert!(e.to_string().contains(needle), "expected '{needle}': {e}"),
            Ok(_) => panic!("expected an error with '{needle}'"),
        }
    }

    // Range tombstones and the filter.
    let mut p = base.clone();
    p.range_tombstones = Some(Frame::raw(4, Payload::default().v(1 << 40).0));
    corrupt(&p.assemble(false), "range tombstone count");
    let mut p = base.clone();
    p.range_tombstones = Some(Frame::raw(4, Payload::default().v(1).v(1 << 40).0));
    corrupt(&p.assemble(false), "truncated");
    let mut p = base.clone();
    p.filter = Some(Frame::raw(2, vec![255, 0, 0]));
    corrupt(&p.assemble(false), "probes");
    // A meta block above the meta limit, declared in its frame.
    let mut p = base.clone();
    p.filter.as_mut().unwrap().uncompressed_len = MAX_META_LEN + 1;
    limit(
        decode(&p.assemble(false)).map(|_| ()),
        "block uncompressed length",
        MAX_META_LEN.into(),
    );

    let peak = ALLOCATOR.max_allocated();
    eprintln!("peak allocation: {peak} bytes");
    assert!(peak < PEAK, "peak allocation {peak} bytes");
}
