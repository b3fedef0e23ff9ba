//! Restore from frozen views at the same and at other parallelisms: every key lands in exactly
//! one new task with exactly its state, for all five state kinds and namespaces; incompatible
//! registrations and sources fail with errors naming the problem; restored states that are never
//! registered survive into later snapshots.

mod common;

use std::collections::BTreeMap;

use flowstate::codec::to_bytes;
use flowstate::key_group::operator_index_for_key_group;
use flowstate::*;

const MAXP: u32 = 128;
const KEYS: u64 = 2_000;

use common::Sum;

struct Handles {
    value: ValueState<u64>,
    list: ListState<String>,
    map: MapState<u32, f64>,
    reducing: ReducingState<i64>,
    aggregating: AggregatingState<Sum>,
    windowed: ValueState<u64, TimeWindow>,
}

fn register(b: &mut HeapBackend<u64>) -> Result<Handles> {
    Ok(Handles {
        value: b.register(ValueStateDescriptor::<u64>::new("value"))?,
        list: b.register(ListStateDescriptor::<String>::new("list"))?,
        map: b.register(MapStateDescriptor::<u32, f64>::new("map"))?,
        reducing: b.register(ReducingStateDescriptor::<i64>::new("reducing", |a, b| {
            a + b
        }))?,
        aggregating: b.register(AggregatingStateDescriptor::new("aggregating", Sum))?,
        windowed: b.register(
            ValueStateDescriptor::<u64>::new("windowed").with_namespace::<TimeWindow>(),
        )?,
    })
}

fn window(k: u64) -> TimeWindow {
    TimeWindow::new((k % 3) as i64 * 10, (k % 3) as i64 * 10 + 10)
}

/// Fills the keys of `range` (all keys whose key group it owns) with state derived from the key.
fn fill(b: &mut HeapBackend<u64>, h: &Handles) -> Result<()> {
    for k in 0..KEYS {
        b.set_current_key(&k);
        let owned = common::owns_current(&*b);
        if !owned {
            continue;
        }
        b.value(&h.value).update(k * 10)?;
        if k % 2 == 0 {
            b.list(&h.list)
                .add_all(vec![format!("a{k}"), format!("b{k}")])?;
        }
        if k % 3 != 0 {
            b.map(&h.map).put_all([(1, k as f64), (2, 0.5)])?;
        }
        b.reducing(&h.reducing).add(k as i64)?;
        b.reducing(&h.reducing).add(1)?;
        b.aggregating(&h.aggregating).add(k as i64)?;
        let w = window(k);
        b.value(&h.windowed).namespace(&w).update(k + 1)?;
    }
    Ok(())
}

/// Checks that a backend holds exactly the state of the keys it owns.
fn check(b: &mut HeapBackend<u64>, h: &Handles) -> Result<u64> {
    let mut owned_keys = 0;
    for k in 0..KEYS {
        b.set_current_key(&k);
        let owned = common::owns_current(&*b);
        if !owned {
            assert!(matches!(
                b.value(&h.value).get(),
                Err(Error::KeyGroupOutOfRange { .. })
            ));
            continue;
        }
        owned_keys += 1;
        assert_eq!(b.value(&h.value).get()?, Some(k * 10), "value of {k}");
        let list = b.list(&h.list).get()?;
        if k % 2 == 0 {
            assert_eq!(list, vec![format!("a{k}"), format!("b{k}")], "list of {k}");
        } else {
            assert!(list.is_empty());
        }
        let mut map = b.map(&h.map).entries()?;
        map.sort_by_key(|e| e.0);
        if k % 3 != 0 {
            assert_eq!(map, vec![(1, k as f64), (2, 0.5)], "map of {k}");
        } else {
            assert!(map.is_empty());
        }
        assert_eq!(b.reducing(&h.reducing).get()?, Some(k as i64 + 1));
        assert_eq!(b.aggregating(&h.aggregating).get()?, Some((k as i64, 1)));
        let w = window(k);
        assert_eq!(b.value(&h.windowed).namespace(&w).get()?, Some(k + 1));
        let other = TimeWindow::new(-1, 0);
        assert_eq!(b.value(&h.windowed).namespace(&other).get()?, None);
    }
    Ok(owned_keys)
}

fn task_config(parallelism: u32, index: u32) -> Result<BackendConfig> {
    Ok(BackendConfig::heap()
        .max_parallelism(MAXP)
        .key_group_range(KeyGroupRange::for_operator(MAXP, parallelism, index)?))
}

/// Runs `old_p` tasks, snapshots them, restores `new_p` tasks from the snapshots whose ranges
/// intersect each new range, and checks every key is in exactly one new task with its state.
fn rescale(old_p: u32, new_p: u32) -> Result<()> {
    let mut snapshots = Vec::new();
    for i in 0..old_p {
        let mut b = HeapBackend::<u64>::open(task_config(old_p, i)?)?;
        let h = register(&mut b)?;
        fill(&mut b, &h)?;
        snapshots.push(b.snapshot_state()?);
    }
    let mut total = 0;
    for i in 0..new_p {
        let config = task_config(new_p, i)?;
        let range = KeyGroupRange::for_operator(MAXP, new_p, i)?;
        let sources: Vec<&dyn RestoreSource> = snapshots
            .iter()
            .filter(|s| !s.key_group_range().intersection(&range).is_empty())
            .map(|s| s as &dyn RestoreSource)
            .collect();
        let mut b = HeapBackend::<u64>::restore(config, &sources)?;
        let h = register(&mut b)?;
        total += check(&mut b, &h)?;
        // Each key is owned by the task the assignment formula names.
        for k in 0..KEYS {
            let kg = key_group_for(&to_bytes(&k), MAXP);
            assert_eq!(
                range.contains(kg),
                operator_index_for_key_group(MAXP, new_p, kg) == i
            );
        }
    }
    assert_eq!(total, KEYS, "every key restored exactly once");
    Ok(())
}

#[test]
fn restore_rescale_1_to_3() -> Result<()> {
    rescale(1, 3)
}

#[test]
fn restore_rescale_3_to_2() -> Result<()> {
    rescale(3, 2)
}

#[test]
fn restore_rescale_4_to_4() -> Result<()> {
    rescale(4, 4)
}

#[test]
fn restore_rescale_every_p_to_q_up_to_8() -> Result<()> {
    for p in 1..=8 {
        for q in 1..=8 {
            rescale(p, q)?;
        }
    }
    Ok(())
}

#[test]
fn restore_rescale_1_to_128_and_back() -> Result<()> {
    rescale(1, 128)?;
    rescale(128, 1)
}

#[test]
fn restored_state_with_another_kind_or_codec_fails_naming_it() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let snapshot = b.snapshot_state()?;

    let mut r = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&snapshot])?;
    let err = r
        .register(ValueStateDescriptor::<i64>::new("value"))
        .expect_err("i64 is not the u64 the snapshot holds");
    match err {
        Error::IncompatibleState {
            name,
            snapshot,
            requested,
        } => {
            assert_eq!(name, "value");
            assert!(snapshot.contains("u64") && requested.contains("i64"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        r.register(ListStateDescriptor::<u64>::new("value")),
        Err(Error::IncompatibleState { .. })
    ));
    assert!(matches!(
        r.register(MapStateDescriptor::<u64, f64>::new("map")),
        Err(Error::IncompatibleState { .. })
    ));
    // The failed registrations lost nothing: the right types still restore everything.
    assert_eq!(r.unregistered_states().len(), 6);
    let h = register(&mut r)?;
    assert_eq!(check(&mut r, &h)?, KEYS);
    Ok(())
}

#[test]
fn restore_with_another_key_codec_or_max_parallelism_fails() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let snapshot = b.snapshot_state()?;
    assert!(matches!(
        HeapBackend::<String>::restore(BackendConfig::heap(), &[&snapshot]),
        Err(Error::IncompatibleSnapshot(_))
    ));
    assert!(matches!(
        HeapBackend::<u64>::restore(BackendConfig::heap().max_parallelism(256), &[&snapshot]),
        Err(Error::IncompatibleSnapshot(_))
    ));
    Ok(())
}

#[test]
fn key_groups_covered_twice_are_an_error() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let snapshot = b.snapshot_state()?;
    let err = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&snapshot, &snapshot])
        .err()
        .expect("the same key groups twice");
    assert!(
        err.to_string()
            .contains("covered by source 0 and by source 1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn unregistered_restored_state_survives_the_next_snapshot() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let first = b.snapshot_state()?;

    // Restore, touch only one state, snapshot again, restore from that.
    let mut r = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&first])?;
    assert_eq!(r.entry_count().unwrap(), b.entry_count().unwrap());
    let value = r.register(ValueStateDescriptor::<u64>::new("value"))?;
    r.set_current_key(&1);
    r.value(&value).update(7)?;
    let second = r.snapshot_state()?;
    assert_eq!(second.states().len(), 6);
    for name in ["list", "map", "reducing", "aggregating", "windowed"] {
        assert_eq!(
            second.canonical_entries(name).unwrap(),
            first.canonical_entries(name).unwrap(),
            "{name} unchanged"
        );
    }

    let mut again = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&second])?;
    let h2 = register(&mut again)?;
    again.set_current_key(&1);
    assert_eq!(again.value(&h2.value).get()?, Some(7));
    again.value(&h2.value).update(10)?;
    assert_eq!(check(&mut again, &h2)?, KEYS);
    Ok(())
}

#[test]
fn a_snapshot_restores_what_it_froze_not_later_writes() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let snapshot = b.snapshot_state()?;
    for k in 0..KEYS {
        b.set_current_key(&k);
        b.value(&h.value).clear()?;
        b.list(&h.list).add("later".into())?;
    }
    let mut r = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&snapshot])?;
    let h = register(&mut r)?;
    assert_eq!(check(&mut r, &h)?, KEYS);
    Ok(())
}

/// A source whose entries sit in the wrong key group (a damaged or forged snapshot).
struct Misplaced(StateSnapshot);

impl RestoreSource for Misplaced {
    fn max_parallelism(&self) -> u32 {
        self.0.max_parallelism()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.0.key_group_range()
    }
    fn key_codec(&self) -> &CodecInfo {
        self.0.key_codec()
    }
    fn state_metas(&self) -> Vec<StateMeta> {
        self.0.state_metas()
    }
    fn read_key_group(&self, kg: u16, visit: &mut dyn FnMut(usize, EncodedEntry)) -> Result<()> {
        // Report key group kg + 1's entries as kg's.
        let next = (kg + 1) % self.0.max_parallelism() as u16;
        self.0.read_key_group(next, visit)
    }
}

#[test]
fn entries_in_the_wrong_key_group_are_detected() -> Result<()> {
    let mut b = HeapBackend::<u64>::open(BackendConfig::heap())?;
    let h = register(&mut b)?;
    fill(&mut b, &h)?;
    let bad = Misplaced(b.snapshot_state()?);
    let err = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&bad])
        .err()
        .expect("misplaced entries");
    assert!(err.to_string().contains("has a key of key group"), "{err}");
    Ok(())
}

#[test]
fn restoring_nothing_gives_an_empty_backend() -> Result<()> {
    let mut r = HeapBackend::<u64>::restore(BackendConfig::heap(), &[])?;
    assert_eq!(r.entry_count().unwrap(), 0);
    let h = register(&mut r)?;
    r.set_current_key(&3);
    assert_eq!(r.value(&h.value).get()?, None);
    let empty = HeapBackend::<u64>::open(BackendConfig::heap())?.snapshot_state()?;
    let r = HeapBackend::<u64>::restore(BackendConfig::heap(), &[&empty])?;
    assert_eq!(r.entry_count().unwrap(), 0);
    Ok(())
}

#[test]
fn backend_enum_restores_too() -> Result<()> {
    let mut b = Backend::<u64>::open(BackendConfig::heap())?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let mut expected = BTreeMap::new();
    for k in 0..100u64 {
        b.set_current_key(&k);
        b.value(&v).update(k * k)?;
        expected.insert(k, k * k);
    }
    let snapshot = b.snapshot_state()?;
    let mut r = Backend::<u64>::restore(BackendConfig::heap(), &[&snapshot])?;
    let v = r.register(ValueStateDescriptor::<u64>::new("v"))?;
    for (k, want) in expected {
        r.set_current_key(&k);
        assert_eq!(r.value(&v).get()?, Some(want));
    }
    Ok(())
}
