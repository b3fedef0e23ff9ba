//! Background TTL cleanup (spec/state-semantics.md R70): the heap backend's incremental cleanup
//! removes expired entries as other entries are accessed, and the LSM backend's compaction
//! filter drops expired values, list elements and map entries as tables are compacted, so that
//! state nobody reads again does not stay forever.

use std::sync::Arc;
use std::time::Duration;

use flowstate::lsm::LsmBackground;
use flowstate::*;

const KEYS: u64 = 2_000;

/// A TTL whose expired state still counts in `entry_count` (so the count shows what is
/// stored), with `cleanup` entries checked per access on the heap backend.
fn counting_ttl(ms: u64, cleanup: usize) -> TtlConfig {
    TtlConfig::after(Duration::from_millis(ms))
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
        .incremental_cleanup(cleanup)
}

#[test]
fn heap_incremental_cleanup_removes_what_nobody_reads() -> Result<()> {
    for cleanup in [0, 5, 50] {
        let clock = Arc::new(ManualClock::new(0));
        let mut b = HeapBackend::<u64>::open(BackendConfig::heap().clock(clock.clone()))?;
        let v =
            b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(counting_ttl(100, cleanup)))?;
        let l =
            b.register(ListStateDescriptor::<u32>::new("l").with_ttl(counting_ttl(100, cleanup)))?;
        for k in 0..KEYS {
            b.set_current_key(&k);
            b.value(&v).update(k)?;
            b.list(&l).add(1)?;
        }
        clock.set(60);
        for k in (0..KEYS).step_by(2) {
            b.set_current_key(&k);
            b.list(&l).add(2)?; // half the lists get a younger element
        }
        let before = b.table_bytes();
        clock.set(130); // the first writes expired; the younger list elements have not
        b.set_current_key(&u64::MAX);
        // Accesses to one other key only: each checks `cleanup` more entries of its state.
        for _ in 0..2 * KEYS {
            b.value(&v).update(0)?;
            b.list(&l).get()?;
        }
        let left = b.entry_count()?;
        let lists_left = b.keys(l, &())?.len();
        match cleanup {
            0 => assert_eq!(left, 2 * KEYS as usize + 1, "no cleanup: everything stays"),
            _ => {
                // Left: the accessed key's value, and the lists with a live element, trimmed.
                assert_eq!(left, 1 + KEYS as usize / 2, "cleanup size {cleanup}");
                assert_eq!(lists_left, KEYS as usize / 2);
                assert!(b.table_bytes() < before, "memory went down");
            }
        }
        for k in (0..KEYS).step_by(2).take(10) {
            b.set_current_key(&k);
            if cleanup > 0 {
                assert_eq!(b.list(&l).get()?, vec![2], "the live element stays");
            }
        }
    }
    Ok(())
}

#[test]
fn heap_cleanup_leaves_a_taken_snapshot_unchanged() -> Result<()> {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap().clock(clock.clone()))?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(counting_ttl(100, 50)))?;
    for k in 0..KEYS {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    let frozen = b.snapshot_state()?; // at 0: everything live
    clock.set(200);
    b.set_current_key(&u64::MAX);
    for _ in 0..KEYS {
        b.value(&v).update(0)?;
    }
    assert_eq!(b.entry_count()?, 1);
    assert_eq!(
        frozen.entry_count()?,
        KEYS as usize,
        "the snapshot keeps its view"
    );
    Ok(())
}

fn lsm(dir: &std::path::Path, clock: Arc<ManualClock>) -> Result<LsmBackend<u64>> {
    LsmBackend::open(
        BackendConfig::lsm(dir)
            .lsm_background(LsmBackground::Inline)
            .lsm_memtable_bytes(256 << 10)
            .clock(clock),
    )
}

#[test]
fn lsm_compaction_drops_expired_values_list_elements_and_map_entries() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::new(0));
    let mut b = lsm(&dir.path().join("lsm"), clock.clone())?;
    let ttl = counting_ttl(100, 0);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl))?;
    let m = b.register(MapStateDescriptor::<u32, u64>::new("m").with_ttl(ttl))?;
    let plain = b.register(ValueStateDescriptor::<u64>::new("plain"))?;
    for k in 0..KEYS {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
        b.list(&l).add(1)?;
        b.map(&m).put(1, k)?;
        b.value(&plain).update(k)?;
    }
    b.compact_all()?;
    clock.set(60);
    for k in (0..KEYS).step_by(4) {
        b.set_current_key(&k);
        b.list(&l).add(2)?; // appended as a merge operand over the compacted list
        b.map(&m).put(2, k)?;
    }
    b.compact_all()?;
    let before = b.stats().tree.levels.iter().map(|l| l.bytes).sum::<u64>();
    assert_eq!(b.entry_count()?, 4 * KEYS as usize, "nothing expired yet");
    clock.set(130);
    assert_eq!(
        b.entry_count()?,
        4 * KEYS as usize,
        "expired state stays until compacted (this visibility counts it)"
    );
    // A full compaction goes to the bottom level: nothing expired is left.
    b.compact_all()?;
    let after = b.stats().tree.levels.iter().map(|l| l.bytes).sum::<u64>();
    let quarter = KEYS as usize / 4;
    assert_eq!(
        b.entry_count()?,
        KEYS as usize + 2 * quarter,
        "left: the plain values, the young list elements and map entries"
    );
    assert!(after < before, "table bytes went down: {before} -> {after}");
    b.set_current_key(&0);
    assert_eq!(b.list(&l).get()?, vec![2]);
    assert_eq!(b.map(&m).entries()?, vec![(2, 0)]);
    assert_eq!(b.value(&plain).get()?, Some(0));
    b.set_current_key(&1);
    assert!(b.list(&l).get()?.is_empty());
    assert_eq!(b.value(&v).get()?, None);
    Ok(())
}
