//! A table answers like a `BTreeMap` of what was written: random entries of every kind, random
//! range tombstones and user properties, random block sizes, restart intervals, compressions,
//! bloom settings and prefix extractors; built, then read back with `get`, `iter`,
//! `iter_from`, `iter_prefix`, the filter (never a false negative) and the range tombstones
//! (normalized, covering exactly what the ranges given cover).

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_formats::table::{
    EntryKind, FixedPrefix, PrefixExtractor, TableBuilder, TableEntry, TableOptions,
    TableReadOptions, TableReader,
};
use flowstate_formats::Compression;
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, (EntryKind, Vec<u8>)>;

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct byte values, so that keys share long prefixes and prefixes repeat.
    prop::collection::vec(0u8..4, 0..7)
}

fn entry() -> impl Strategy<Value = (EntryKind, Vec<u8>)> {
    (0u8..3, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| {
        let kind = EntryKind::from_code(k).unwrap();
        let v = if kind == EntryKind::Delete {
            Vec::new()
        } else {
            v
        };
        (kind, v)
    })
}

#[derive(Debug, Clone)]
struct Case {
    model: Model,
    tombstones: Vec<(Vec<u8>, Vec<u8>)>,
    user: BTreeMap<String, Vec<u8>>,
    block_size: usize,
    restart_interval: usize,
    compression: Compression,
    bloom_bits_per_key: u32,
    prefix: Option<usize>,
    cache: bool,
    probes: Vec<Vec<u8>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::btree_map(key(), entry(), 0..150),
        prop::collection::vec((key(), key()), 0..6),
        prop::collection::btree_map("[a-c]{0,3}", prop::collection::vec(any::<u8>(), 0..4), 0..3),
        prop_oneof![Just(1usize), Just(40), Just(200), Just(4096)],
        prop_oneof![Just(1usize), Just(2), Just(5), Just(16)],
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Lz4),
            Just(Compression::Zstd { level: 1 }),
        ],
        prop_oneof![Just(0u32), Just(1), Just(10)],
        prop_oneof![Just(None), Just(Some(1usize)), Just(Some(2))],
        any::<bool>(),
        prop::collection::vec(key(), 0..25),
    )
        .prop_map(
            |(
                model,
                tombstones,
                user,
                block_size,
                restart_interval,
                compression,
                bloom,
                prefix,
                cache,
                probes,
            )| {
                Case {
                    model,
                    tombstones,
                    user,
                    block_size,
                    restart_interval,
                    compression,
                    bloom_bits_per_key: bloom,
                    prefix,
                    cache,
                    probes,
                }
            },
        )
}

fn entry_of((k, (kind, v)): (&Vec<u8>, &(EntryKind, Vec<u8>))) -> TableEntry {
    TableEntry {
        key: k.clone(),
        kind: *kind,
        value: v.clone(),
    }
}

/// The model's entries from `start` on.
fn from(model: &Model, start: &[u8]) -> Vec<TableEntry> {
    model.range(start.to_vec()..).map(entry_of).collect()
}

/// The model's entries whose key starts with `prefix`.
fn with_prefix(model: &Model, prefix: &[u8]) -> Vec<TableEntry> {
    model
        .range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(entry_of)
        .collect()
}

fn collect(it: flowstate_formats::table::TableIter<&[u8]>) -> Vec<TableEntry> {
    it.collect::<Result<_, _>>()
        .expect("the model table reads back")
}

#[derive(Default)]
struct MapCache(
    std::sync::Mutex<
        std::collections::HashMap<
            flowstate_formats::table::BlockCacheKey,
            Arc<flowstate_formats::table::Block>,
        >,
    >,
);

impl flowstate_formats::table::BlockCache for MapCache {
    fn get(
        &self,
        key: &flowstate_formats::table::BlockCacheKey,
    ) -> Option<Arc<flowstate_formats::table::Block>> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn insert(
        &self,
        key: flowstate_formats::table::BlockCacheKey,
        block: Arc<flowstate_formats::table::Block>,
    ) {
        self.0.lock().unwrap().insert(key, block);
    }
}

fn check(c: Case) {
    let extractor: Option<Arc<dyn PrefixExtractor>> = c
        .prefix
        .map(|n| Arc::new(FixedPrefix::new(n)) as Arc<dyn PrefixExtractor>);
    let mut file = Vec::new();
    let mut b = TableBuilder::new(
        &mut file,
        TableOptions {
            block_size: c.block_size,
            restart_interval: c.restart_interval,
            compression: c.compression,
            bloom_bits_per_key: c.bloom_bits_per_key,
            prefix_extractor: extractor.clone(),
            table_id: 3,
        },
        "model.sst",
    )
    .unwrap();
    for (k, (kind, v)) in &c.model {
        b.add(k, *kind, v).unwrap();
    }
    for (s, e) in &c.tombstones {
        let r = b.add_range_tombstone(s, e);
        assert_eq!(r.is_ok(), s < e, "{s:?}..{e:?}");
    }
    for (name, value) in &c.user {
        b.add_user_property(name, value).unwrap();
    }
    let summary = b.finish().unwrap();
    assert_eq!(summary.len, file.len() as u64);
    assert_eq!(summary.entries(), c.model.len() as u64);
    assert_eq!(summary.smallest(), c.model.keys().next().map(Vec::as_slice));
    assert_eq!(summary.largest(), c.model.keys().last().map(Vec::as_slice));

    let r = TableReader::open_with(
        &file[..],
        "model.sst",
        TableReadOptions {
            prefix_extractor: extractor.clone(),
            block_cache: c.cache.then(|| {
                Arc::new(MapCache::default()) as Arc<dyn flowstate_formats::table::BlockCache>
            }),
            ..TableReadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.verify().unwrap(), c.model.len() as u64);
    let p = r.properties();
    assert_eq!(p, &summary.properties);
    let count = |k: EntryKind| c.model.values().filter(|(kind, _)| *kind == k).count() as u64;
    assert_eq!(
        (p.deletes, p.merges),
        (count(EntryKind::Delete), count(EntryKind::Merge))
    );
    assert_eq!(
        p.raw_key_bytes,
        c.model.keys().map(|k| k.len() as u64).sum::<u64>()
    );
    assert_eq!(p.user_properties, c.user);
    assert_eq!(p.restart_interval as usize, c.restart_interval);

    // Every entry, in order.
    assert_eq!(collect(r.iter()), from(&c.model, b""));

    // Point lookups and the filter: every key is found and may be contained, every extracted
    // prefix may be contained and scans to the model's entries.
    let mut prefixes = std::collections::BTreeSet::new();
    for (k, (kind, v)) in &c.model {
        assert!(r.may_contain(k), "false negative for {k:?}");
        assert_eq!(r.get(k).unwrap(), Some((*kind, v.clone())));
        if let Some(n) = extractor.as_ref().and_then(|e| e.prefix_len(k)) {
            assert!(
                r.may_contain_prefix(&k[..n]),
                "prefix false negative for {k:?}"
            );
            prefixes.insert(k[..n].to_vec());
        }
    }
    for prefix in &prefixes {
        assert_eq!(
            collect(r.iter_prefix(prefix)),
            with_prefix(&c.model, prefix)
        );
    }
    // Probes, present or not: lookups, scans from them, scans of their prefixes.
    for probe in c.probes.iter().chain(c.model.keys().take(3)) {
        assert_eq!(
            r.get(probe).unwrap(),
            c.model.get(probe).cloned(),
            "get {probe:?}"
        );
        assert_eq!(
            collect(r.iter_from(probe)),
            from(&c.model, probe),
            "iter_from {probe:?}"
        );
        for n in 0..=probe.len() {
            let prefix = &probe[..n];
            assert_eq!(
                collect(r.iter_prefix(prefix)),
                with_prefix(&c.model, prefix),
                "iter_prefix {prefix:?}"
            );
        }
    }

    // Range tombstones: normalized, and covering exactly the keys some given range covers.
    let ts = r.range_tombstones();
    assert_eq!(ts, summary.range_tombstones);
    assert_eq!(p.range_tombstones, ts.len() as u64);
    assert!(ts.iter().all(|t| t.start < t.end));
    assert!(ts.windows(2).all(|w| w[0].end < w[1].start));
    let mut points: Vec<Vec<u8>> = c.probes.clone();
    for (s, e) in &c.tombstones {
        for k in [s, e] {
            points.push(k.clone());
            let mut after = k.clone();
            after.push(0);
            points.push(after);
            if let Some((_, shorter)) = k.split_last() {
                points.push(shorter.to_vec());
            }
        }
    }
    for k in &points {
        let given = c.tombstones.iter().any(|(s, e)| s <= k && k < e);
        assert_eq!(
            r.covering_tombstone(k).is_some(),
            given,
            "coverage of {k:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_table_reads_back_as_the_model(c in case()) {
        check(c);
    }
}

#[test]
fn a_large_table_with_default_options_reads_back_as_the_model() {
    let mut model = Model::new();
    let mut x: u64 = 0x5eed;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("{:02}|{:04}|user-{}", x % 7, (x >> 8) % 128, x >> 40).into_bytes();
        let kind = EntryKind::from_code((x >> 20) as u8 % 3).unwrap();
        let value = match kind {
            EntryKind::Delete => Vec::new(),
            _ => (x >> 3).to_le_bytes()[..(x % 9) as usize].to_vec(),
        };
        model.insert(key, (kind, value));
    }
    check(Case {
        model,
        tombstones: vec![(b"03".to_vec(), b"04".to_vec())],
        user: BTreeMap::new(),
        block_size: 4096,
        restart_interval: 16,
        compression: Compression::Lz4,
        bloom_bits_per_key: 10,
        prefix: Some(8),
        cache: false,
        probes: vec![
            b"02|0017|".to_vec(),
            b"06|0127|user-9".to_vec(),
            b"zz".to_vec(),
        ],
    });
}
