//! The snapshot writer refuses every call that would produce a file the reader rejects, with
//! `InvalidInput` naming the rule; a refused entry leaves the writer usable, an I/O failure
//! does not.

mod common;

use std::io;

use common::*;
use flowstate_formats::snapshot::{
    EntryValue, SnapshotMeta, SnapshotWriter, SnapshotWriterOptions, StateKind,
};
use flowstate_formats::{Compression, FormatError, MAX_BLOCK_LEN};

fn writer(out: &mut Vec<u8>) -> SnapshotWriter<&mut Vec<u8>> {
    SnapshotWriter::new(out, &golden_meta(), Compression::None).unwrap()
}

#[track_caller]
fn invalid(result: Result<(), FormatError>, needle: &str) {
    match result {
        Err(FormatError::InvalidInput { reason, .. }) => {
            assert!(reason.contains(needle), "expected '{needle}': {reason}")
        }
        other => panic!("expected InvalidInput '{needle}', got {other:?}"),
    }
}

const V: EntryValue<'static> = EntryValue::Value(b"v");

#[test]
fn key_groups_must_ascend_within_the_range_and_be_opened() {
    let mut out = Vec::new();
    let mut w = writer(&mut out);
    invalid(w.add_entry(0, b"k", b"", V), "begin_key_group first");
    invalid(w.end_key_group(), "without an open key group");
    invalid(w.begin_key_group(9), "outside the snapshot's range");
    invalid(w.begin_key_group(18), "outside the snapshot's range");
    w.begin_key_group(12).unwrap();
    invalid(w.begin_key_group(13), "still open");
    w.end_key_group().unwrap();
    invalid(w.begin_key_group(12), "must ascend");
    invalid(w.begin_key_group(11), "must ascend");
    w.begin_key_group(13).unwrap();
    let w2 = w;
    invalid(w2.finish().map(|_| ()), "still open");
}

#[test]
fn entries_must_follow_the_state_and_key_order() {
    let mut out = Vec::new();
    let mut w = writer(&mut out);
    w.begin_key_group(10).unwrap();
    invalid(w.add_entry(4, b"k", b"", V), "unknown state index 4");
    invalid(w.add_entry(1, b"k", b"", V), "holds List entries");
    invalid(
        w.add_entry(0, b"k", b"", EntryValue::List(&[])),
        "holds Value entries",
    );
    w.add_entry(1, b"b", b"", EntryValue::List(&[])).unwrap();
    invalid(w.add_entry(0, b"z", b"", V), "states must ascend");
    invalid(
        w.add_entry(1, b"b", b"", EntryValue::List(&[])),
        "duplicate or out of order",
    );
    invalid(
        w.add_entry(1, b"a", b"", EntryValue::List(&[])),
        "duplicate or out of order",
    );
    w.add_entry(1, b"b", b"\x01", EntryValue::List(&[]))
        .unwrap();
    let unsorted = [(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])];
    invalid(
        w.add_entry(2, b"k", b"", EntryValue::Map(&unsorted)),
        "not strictly ascending",
    );
    let dup = [(b"a".to_vec(), vec![]), (b"a".to_vec(), vec![1])];
    invalid(
        w.add_entry(2, b"k", b"", EntryValue::Map(&dup)),
        "not strictly ascending",
    );
    // The refused calls left no trace: the file holds exactly the two accepted entries.
    w.end_key_group().unwrap();
    // A new key group starts the order afresh.
    w.begin_key_group(11).unwrap();
    w.add_entry(0, b"a", b"", V).unwrap();
    w.end_key_group().unwrap();
    let summary = w.finish().unwrap();
    assert_eq!(summary.entry_count, 3);
    let (_, entries) = decode(&out).unwrap();
    assert_eq!(entries.len(), 3);
}

#[test]
fn invalid_meta_and_options_are_refused() {
    let mut bad: Vec<SnapshotMeta> = Vec::new();
    let mut m = golden_meta();
    m.states[2].user_key = None;
    bad.push(m);
    let mut m = golden_meta();
    m.states[0].kind = StateKind::Map;
    bad.push(m);
    let mut m = golden_meta();
    m.states[1].name = "clicks".into();
    bad.push(m);
    let mut m = golden_meta();
    m.key_group_end = 128;
    bad.push(m);
    let mut m = golden_meta();
    m.key_group_start = 18;
    bad.push(m);
    let mut m = golden_meta();
    m.max_parallelism = 1 << 16;
    bad.push(m);
    let mut m = golden_meta();
    m.states[0].name = "x".repeat(70_000);
    bad.push(m);
    for m in bad {
        let r = SnapshotWriter::new(Vec::new(), &m, Compression::None).map(|_| ());
        assert!(
            matches!(r, Err(FormatError::InvalidInput { .. })),
            "{m:?}: {r:?}"
        );
    }
    let r = SnapshotWriter::with_options(
        Vec::new(),
        &golden_meta(),
        SnapshotWriterOptions {
            compression: Compression::Zstd { level: 99 },
            file_name: "chk-3/kg".into(),
            ..SnapshotWriterOptions::default()
        },
    );
    match r {
        Err(e @ FormatError::InvalidInput { .. }) => assert_eq!(e.file(), Some("chk-3/kg")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_entry_larger_than_a_block_may_be_is_a_limit_error() {
    let mut out = Vec::new();
    let mut w = writer(&mut out);
    w.begin_key_group(10).unwrap();
    let big = vec![0u8; MAX_BLOCK_LEN as usize];
    match w.add_entry(0, b"k", b"", EntryValue::Value(&big)) {
        Err(FormatError::LimitExceeded { what, .. }) => assert_eq!(what, "entry length"),
        other => panic!("{other:?}"),
    }
    invalid(w.end_key_group(), "failed earlier");
}

struct FailAfter(usize);

impl io::Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0 < buf.len() {
            return Err(io::Error::other("disk full"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_io_error_names_the_file_and_stops_the_writer() {
    let meta = golden_meta();
    let options = || SnapshotWriterOptions {
        block_size: 1,
        file_name: "chk-9/state".into(),
        ..SnapshotWriterOptions::default()
    };
    // Too small for the header.
    match SnapshotWriter::with_options(FailAfter(4), &meta, options()) {
        Err(FormatError::Io {
            file, offset: 0, ..
        }) => assert_eq!(file, "chk-9/state"),
        other => panic!("{other:?}"),
    }
    let mut w = SnapshotWriter::with_options(FailAfter(400), &meta, options()).unwrap();
    w.begin_key_group(10).unwrap();
    let mut failed = None;
    for i in 0..100u8 {
        if let Err(e) = w.add_entry(0, &[i], b"", V) {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(FormatError::Io { file, .. }) => assert_eq!(file, "chk-9/state"),
        other => panic!("{other:?}"),
    }
    invalid(w.add_entry(0, &[200], b"", V), "failed earlier");
    invalid(w.finish().map(|_| ()), "failed earlier");
}
