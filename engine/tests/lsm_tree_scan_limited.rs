//! `Tree::scan_range_limited` (what timer caches refill with) against a model, with memtable
//! tombstones (many more than its per-call tombstone budget), range tombstones, frozen
//! memtables and tables.

mod common;

use common::rng::Lcg;

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::MemStorage;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn limited_all(tree: &Tree, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = start.to_vec();
    let mut calls = 0;
    loop {
        let (got, resume) = tree.scan_range_limited(&from, end, limit).unwrap();
        assert!(got.len() <= limit);
        if let (Some(last), Some(r)) = (got.last(), &resume) {
            assert!(
                r.as_slice() > last.0.as_slice(),
                "resume after the last pair"
            );
        }
        out.extend(got);
        calls += 1;
        assert!(calls < 100_000);
        match resume {
            Some(r) => from = r,
            None => break,
        }
    }
    out
}

#[test]
fn limited_scans_match_full_scans() {
    for seed in 0..2u64 {
        let mut rng = Lcg(seed + 11);
        let tree = Tree::open(
            Arc::new(MemStorage::new()),
            "t",
            TreeOptions {
                block_size: 128,
                l0_compaction_trigger: 2,
                target_table_bytes: 2048,
                level1_max_bytes: 8192,
                ..TreeOptions::default()
            },
        )
        .unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let n = 6_000u32;
        for step in 0..20_000u32 {
            match rng.below(100) {
                0..=49 => {
                    let k = key(rng.below(n as u64) as u32);
                    let v = format!("v{step}").into_bytes();
                    tree.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                50..=93 => {
                    let k = key(rng.below(n as u64) as u32);
                    tree.delete(&k).unwrap();
                    model.remove(&k);
                }
                94..=95 => {
                    let a = rng.below(n as u64) as u32;
                    let b = a + rng.below(300) as u32;
                    tree.delete_range(&key(a), &key(b)).unwrap();
                    let gone: Vec<_> = model
                        .range(key(a)..key(b))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        model.remove(&k);
                    }
                }
                96 => tree.freeze(),
                97 => {
                    tree.freeze();
                    while tree.flush_one().unwrap() {}
                }
                _ => {}
            }
            if step % 5000 == 4999 {
                for (s, e) in [(0, n), (100, 900), (3000, 3001)] {
                    let want: Vec<_> = model
                        .range(key(s)..key(e))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for limit in [3, 64, 5000] {
                        assert_eq!(
                            limited_all(&tree, &key(s), &key(e), limit),
                            want,
                            "seed {seed} step {step} [{s},{e}) limit {limit}"
                        );
                    }
                }
            }
        }
    }
}

/// More memtable tombstones in a row than one call steps over (4 096): calls stop early with a
/// key to go on from, and the loop still finds exactly the live keys behind them.
#[test]
fn runs_of_tombstones_longer_than_a_call_are_crossed() {
    let tree = Tree::open(Arc::new(MemStorage::new()), "t", TreeOptions::default()).unwrap();
    for i in 0..12_000 {
        tree.put(&key(i), b"v").unwrap();
    }
    tree.freeze();
    while tree.flush_one().unwrap() {}
    for i in 0..11_990 {
        tree.delete(&key(i)).unwrap();
    }
    let (first, resume) = tree.scan_range_limited(&key(0), &key(20_000), 5).unwrap();
    assert!(
        first.is_empty(),
        "the first call ends inside the tombstones"
    );
    assert!(resume.is_some());
    let all = limited_all(&tree, &key(0), &key(20_000), 5);
    let want: Vec<_> = (11_990..12_000).map(|i| (key(i), b"v".to_vec())).collect();
    assert_eq!(all, want);
}
