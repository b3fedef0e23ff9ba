//! Tests across the table's parts: the spec example, the block cache hook, the prefix filter,
//! `verify`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::{Compression, FormatError, RandomAccess};

/// A source that counts its reads.
struct Counting {
    bytes: Vec<u8>,
    reads: AtomicUsize,
}

impl Counting {
    fn new(bytes: Vec<u8>) -> Arc<Self> {
        Arc::new(Counting {
            bytes,
            reads: AtomicUsize::new(0),
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

impl RandomAccess for Counting {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.read_at(offset, buf)
    }
}

#[derive(Default)]
struct MapCache {
    blocks: Mutex<HashMap<BlockCacheKey, Arc<Block>>>,
    hits: AtomicUsize,
}

impl BlockCache for MapCache {
    fn get(&self, key: &BlockCacheKey) -> Option<Arc<Block>> {
        let b = self.blocks.lock().unwrap().get(key).cloned();
        if b.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        b
    }

    fn insert(&self, key: BlockCacheKey, block: Arc<Block>) {
        self.blocks.lock().unwrap().insert(key, block);
    }
}

/// 1 000 entries: key `[state, i / 100, i % 100]`-ish, four states.
fn table(options: TableOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = TableBuilder::new(&mut out, options, "t.sst").unwrap();
    for state in 0..4u8 {
        for i in 0..250u16 {
            let mut key = vec![state];
            key.extend_from_slice(&i.to_be_bytes());
            key.extend_from_slice(b"-key");
            b.add(&key, EntryKind::Put, &i.to_le_bytes()).unwrap();
        }
    }
    b.finish().unwrap();
    out
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

#[test]
fn the_spec_example_is_these_bytes() {
    // spec/formats.md section 5.10.
    let mut out = Vec::new();
    let mut b = TableBuilder::new(
        &mut out,
        TableOptions {
            compression: Compression::None,
            table_id: 1,
            ..TableOptions::default()
        },
        "example.sst",
    )
    .unwrap();
    b.add(b"ab", EntryKind::Put, b"1").unwrap();
    b.add(b"ac", EntryKind::Delete, b"").unwrap();
    b.add_range_tombstone(b"x", b"z").unwrap();
    b.add_user_property("kg", &[0, 0, 3, 0]).unwrap();
    let summary = b.finish().unwrap();
    let mut expected = hex("46 4c 4f 57 4c 53 4d 54 02 00 00 00");
    expected.extend(hex(
        "00 00 12 00 00 00 12 00 00 00 | 00 02 04 61 62 31 | 01 01 01 63 | 00 00 00 00 | 01 00 00 00 | e1 3b 6c fd",
    ));
    expected.extend(hex(
        "04 00 05 00 00 00 05 00 00 00 | 01 01 78 01 7a | 2d e7 df ce",
    ));
    expected.extend(hex(
        "02 00 41 00 00 00 41 00 00 00 | 07
         20 00 00 00 00 00 00 00 00 00 00 00 00 00 48 00 00 00 00 00 00 00 00 00 00 32 00 00 00 00 00 40
         00 04 04 00 20 00 00 00 60 00 00 00 00 00 08 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 04
         | e3 d1 49 46",
    ));
    expected.extend(hex(
        "03 00 1c 00 00 00 1c 00 00 00 | 02 01 00 01 01 04 01 | 02 61 62 | 02 61 63 | 10 80 20 00 0a 00
         01 02 6b 67 04 00 00 03 00 | 04 7f f6 12",
    ));
    expected.extend(hex(
        "01 00 06 00 00 00 06 00 00 00 | 01 02 61 63 0c 20 | ea b8 21 42",
    ));
    expected.extend(hex(
        "b8 00 00 00 00 00 00 00 14 00 00 00 ea b8 21 42
         3f 00 00 00 00 00 00 00 4f 00 00 00 e3 d1 49 46
         8e 00 00 00 00 00 00 00 2a 00 00 00 04 7f f6 12
         2c 00 00 00 00 00 00 00 13 00 00 00 2d e7 df ce
         01 00 00 00 00 00 00 00 | 82 c1 c2 48 | 02 00 00 00 | 46 4c 4f 57 4c 53 4d 54",
    ));
    assert_eq!(out, expected, "{}", {
        out.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    });
    assert_eq!(summary.len, 292);
    let r = TableReader::open(&out[..], "example.sst").unwrap();
    assert_eq!(r.verify().unwrap(), 2);
    assert_eq!(r.table_id(), 1);
}

#[test]
fn a_block_cache_serves_repeated_reads() {
    let source = Counting::new(table(TableOptions {
        block_size: 256,
        ..TableOptions::default()
    }));
    let cache = Arc::new(MapCache::default());
    let r = TableReader::open_with(
        Arc::clone(&source),
        "t.sst",
        TableReadOptions {
            block_cache: Some(cache.clone()),
            cache_id: 9,
            ..TableReadOptions::default()
        },
    )
    .unwrap();
    assert!(r.data_block_count() > 20);
    let key = [2u8, 0, 17, b'-', b'k', b'e', b'y'];
    let opened = source.reads();
    assert_eq!(r.get(&key).unwrap().unwrap().1, 17u16.to_le_bytes());
    assert_eq!(source.reads(), opened + 1, "one block read");
    assert_eq!(r.get(&key).unwrap().unwrap().1, 17u16.to_le_bytes());
    assert_eq!(
        source.reads(),
        opened + 1,
        "the second lookup is a cache hit"
    );
    assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
    assert!(cache.blocks.lock().unwrap().keys().all(|k| k.table == 9));
    // A full scan reads every block once, through the same path.
    assert_eq!(r.iter().count(), 1000);
    let blocks = cache.blocks.lock().unwrap().len();
    assert_eq!(blocks, r.data_block_count());
    assert!(cache
        .blocks
        .lock()
        .unwrap()
        .values()
        .all(|b| b.charge() >= b.payload_len()));
    let before = source.reads();
    assert_eq!(r.iter().count(), 1000);
    assert_eq!(
        source.reads(),
        before,
        "a second scan is served by the cache"
    );
}

#[test]
fn lookups_ruled_out_by_range_or_filter_read_no_block() {
    let source = Counting::new(table(TableOptions::default()));
    let r = TableReader::open(Arc::clone(&source), "t.sst").unwrap();
    let opened = source.reads();
    // Outside the key range, and (almost always) ruled out by the filter.
    assert_eq!(r.get(b"\x09").unwrap(), None);
    let absent = (0..100u16)
        .filter(|i| {
            let mut key = vec![1u8];
            key.extend_from_slice(&i.to_be_bytes());
            key.extend_from_slice(b"-kex");
            r.get(&key).unwrap().is_none()
        })
        .count();
    assert_eq!(absent, 100);
    assert!(
        source.reads() - opened <= 5,
        "{} reads",
        source.reads() - opened
    );
}

#[test]
fn a_prefix_scan_skips_a_table_its_filter_rules_out() {
    let extractor: Arc<dyn PrefixExtractor> = Arc::new(FixedPrefix::new(3));
    let bytes = table(TableOptions {
        prefix_extractor: Some(extractor.clone()),
        ..TableOptions::default()
    });
    let source = Counting::new(bytes);
    let r = TableReader::open_with(
        Arc::clone(&source),
        "t.sst",
        TableReadOptions {
            prefix_extractor: Some(extractor),
            ..TableReadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.properties().prefix_extractor.as_deref(), Some("fixed:3"));
    assert_eq!(r.verify().unwrap(), 1000);
    let one: Vec<_> = r
        .iter_prefix(&[3, 0, 200])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].value, 200u16.to_le_bytes());
    // Prefixes the table does not hold (states 0..4 hold key groups 0..250): the filter rules
    // out almost all of them without reading a block.
    let opened = source.reads();
    let mut found = 0;
    for i in 250..350u16 {
        let mut p = vec![2u8];
        p.extend_from_slice(&i.to_be_bytes());
        assert!(r.iter_prefix(&p).next().is_none());
        found += usize::from(r.may_contain_prefix(&p));
    }
    assert!(found <= 5, "{found} false positives");
    assert!(
        source.reads() - opened <= 5,
        "{} reads",
        source.reads() - opened
    );
    // A prefix of another length is not one the extractor extracts: scanned normally.
    assert_eq!(r.iter_prefix(&[1]).count(), 250);
    assert_eq!(r.iter_prefix(&[1, 0]).count(), 250);
    assert_eq!(r.iter_prefix(&[]).count(), 1000);
}

#[test]
fn verify_catches_a_filter_that_disagrees_with_the_keys() {
    // Build with one key set, then swap in the filter of another table with the same layout.
    let a = table(TableOptions::default());
    let mut other = Vec::new();
    let mut b = TableBuilder::new(&mut other, TableOptions::default(), "o").unwrap();
    for state in 0..4u8 {
        for i in 0..250u16 {
            let mut key = vec![state + 10];
            key.extend_from_slice(&i.to_be_bytes());
            key.extend_from_slice(b"-key");
            b.add(&key, EntryKind::Put, &i.to_le_bytes()).unwrap();
        }
    }
    b.finish().unwrap();
    let filter_of = |bytes: &[u8]| {
        let f = bytes.len() - FOOTER_LEN as usize + 16;
        let off = u64::from_le_bytes(bytes[f..f + 8].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(bytes[f + 8..f + 12].try_into().unwrap()) as usize;
        off..off + len
    };
    let (fa, fo) = (filter_of(&a), filter_of(&other));
    assert_eq!(fa.len(), fo.len());
    let mut forged = a.clone();
    forged[fa.clone()].copy_from_slice(&other[fo]);
    crate::fuzzing::repair_table_checksums(&mut forged);
    let r = TableReader::open(&forged[..], "t.sst").unwrap();
    assert_eq!(r.iter().count(), 1000, "a scan does not rehash keys");
    let err = r.verify().unwrap_err();
    assert!(
        matches!(err, FormatError::Corrupt { offset, .. } if offset == fa.start as u64),
        "{err}"
    );
}

#[test]
fn readers_and_iterators_are_send_and_sync_and_outlive_their_borrow() {
    fn check<T: Send + Sync + 'static>(_: &T) {}
    let bytes = Arc::new(table(TableOptions::default()));
    let r = TableReader::open(bytes, "t.sst").unwrap();
    check(&r);
    let mut it = r.iter_from(&[1, 0, 5]);
    drop(r);
    check(&it);
    assert!(it.advance().unwrap());
    assert_eq!(it.key(), [1, 0, 5, b'-', b'k', b'e', b'y']);
    assert_eq!(it.kind(), EntryKind::Put);
    assert_eq!(it.value(), 5u16.to_le_bytes());
    assert!(it.valid());
}

#[test]
fn a_table_of_only_range_tombstones_has_no_data_blocks_and_no_filter() {
    let mut out = Vec::new();
    let mut b = TableBuilder::new(&mut out, TableOptions::default(), "t").unwrap();
    b.add_range_tombstone(b"c", b"d").unwrap();
    b.add_range_tombstone(b"a", b"b").unwrap();
    let s = b.finish().unwrap();
    assert_eq!(s.smallest(), None);
    assert_eq!(s.range_tombstones.len(), 2);
    let r = TableReader::open(&out[..], "t").unwrap();
    assert_eq!(r.data_block_count(), 0);
    assert_eq!(r.get(b"a").unwrap(), None);
    assert!(!r.may_contain(b"a"));
    assert!(!r.may_contain_prefix(b"a"));
    assert_eq!(r.iter().count(), 0);
    assert_eq!(r.iter_from(b"").count(), 0);
    assert_eq!(r.range_tombstones()[0], RangeTombstone::new(*b"a", *b"b"));
    assert!(r.covering_tombstone(b"c").is_some());
    assert!(r.covering_tombstone(b"b").is_none());
    // And an empty table is a table too.
    let mut out = Vec::new();
    let options = TableOptions {
        compression: Compression::None,
        ..TableOptions::default()
    };
    TableBuilder::new(&mut out, options, "t")
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(
        TableReader::open(&out[..], "t").unwrap().verify().unwrap(),
        0
    );
    // Header, properties (14 bytes), index (a count of 0), footer.
    assert_eq!(
        out.len() as u64,
        HEADER_LEN + (14 + 14) + (14 + 1) + FOOTER_LEN
    );
}
