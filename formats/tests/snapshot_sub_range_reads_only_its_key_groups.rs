//! A restore of a sub-range reads the header, the footer, the meta block, the index and the
//! blocks of its own key groups: nothing of the other key groups' blocks.

mod common;

use std::cell::RefCell;
use std::io;

use common::*;
use flowstate_formats::snapshot::SnapshotReader;
use flowstate_formats::{FormatError, RandomAccess};

struct Recording {
    bytes: Vec<u8>,
    reads: RefCell<Vec<(u64, u64)>>,
}

impl RandomAccess for Recording {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reads.borrow_mut().push((offset, buf.len() as u64));
        self.bytes.read_at(offset, buf)
    }
}

#[test]
fn reading_two_key_groups_touches_only_their_blocks() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let source = Recording {
            bytes: golden(name),
            reads: RefCell::new(Vec::new()),
        };
        let r = SnapshotReader::open(&source, name).unwrap();
        let len = source.bytes.len() as u64;
        let f = source.bytes.len() - 56;
        let meta_len = u32::from_le_bytes(source.bytes[f + 8..f + 12].try_into().unwrap());
        let index_at = u64::from_le_bytes(source.bytes[f + 16..f + 24].try_into().unwrap());
        let mut allowed = vec![(0, 12 + u64::from(meta_len)), (index_at, len)];
        let opened = source.reads.borrow().len();
        for kg in [12, 15] {
            let loc = r.location(kg).unwrap();
            allowed.push((loc.offset, loc.offset + loc.len));
            let n = r.read_key_group(kg, |_| Ok::<_, FormatError>(())).unwrap();
            assert_eq!(n, loc.entry_count);
        }
        // Key groups 10 and 17 hold entries, and none of their bytes were read.
        assert!(r.location(10).is_some() && r.location(17).is_some());
        let reads = source.reads.borrow();
        assert!(reads.len() > opened, "{name}: the key groups were read");
        for &(offset, n) in reads.iter() {
            assert!(
                allowed.iter().any(|&(s, e)| s <= offset && offset + n <= e),
                "{name}: read of {n} bytes at {offset} is outside {allowed:?}"
            );
        }
    }
}

#[test]
fn an_empty_key_group_reads_nothing() {
    let source = Recording {
        bytes: golden("snapshot_none_v1.bin"),
        reads: RefCell::new(Vec::new()),
    };
    let r = SnapshotReader::open(&source, "s").unwrap();
    let before = source.reads.borrow().len();
    assert_eq!(
        r.read_key_group(13, |_| Ok::<_, FormatError>(())).unwrap(),
        0
    );
    assert_eq!(source.reads.borrow().len(), before);
    assert!(r.location(13).is_none());
    let err = r
        .read_key_group(18, |_| Ok::<_, FormatError>(()))
        .unwrap_err();
    assert!(matches!(err, FormatError::InvalidInput { .. }), "{err}");
}
