//! Conformance cases of state TTL (spec/state-semantics.md R60–R71), run on every backend
//! configuration with a [`ManualClock`].

use std::sync::Arc;
use std::time::Duration;

use flowstate::codec::to_bytes;
use flowstate::*;

use super::{live_entries, Factory, SumCount, MAXP};

/// A backend owning every key group on a manual clock at 0, and the clock.
fn open_at_zero<F: Factory>(f: &F) -> (F::Backend<u64>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(0));
    let b = f.open_clocked::<u64>(MAXP, KeyGroupRange::all(MAXP).unwrap(), clock.clone());
    (b, clock)
}

fn ttl(ms: u64) -> TtlConfig {
    TtlConfig::after(Duration::from_millis(ms))
}

/// A value state's bytes in a snapshot: the timestamp first, then the value.
fn stamped<V: flowstate::Codec + Clone>(value: &V, timestamp: u64) -> Vec<u8> {
    to_bytes(&TtlValue::new(value.clone(), timestamp))
}

/// R60, R61, R63, R64: a value lives `ttl` after its last write, then reads as absent and the
/// read removes it.
pub fn ttl_value_expires_and_the_read_removes_it<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let s = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(100)))?;
    b.set_current_key(&1);
    b.value(&s).update(7)?;
    clock.set(60);
    b.value(&s).update(8)?; // a write restamps (OnCreateAndWrite)
    clock.set(159);
    assert_eq!(b.value(&s).get()?, Some(8));
    clock.set(160);
    assert_eq!(b.entry_count()?, 0, "an expired entry does not count");
    assert!(b.keys(s, &())?.is_empty(), "nor is its key listed");
    assert_eq!(b.value(&s).get()?, None);
    clock.set(0);
    assert_eq!(b.value(&s).get()?, None, "the read removed it (R64)");
    b.value(&s).update(9)?;
    b.value(&s).clear()?;
    assert_eq!(b.value(&s).get()?, None);
    Ok(())
}

/// R62: with `OnReadAndWrite`, every read that returns the value restamps it.
pub fn ttl_reads_restamp_with_on_read_and_write<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let cfg = ttl(100).update(TtlUpdate::OnReadAndWrite);
    let s = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(cfg))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(cfg))?;
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(cfg))?;
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).with_ttl(cfg))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_ttl(cfg))?;
    b.set_current_key(&1);
    b.value(&s).update(1)?;
    b.list(&l).add(1)?;
    b.map(&m).put(1, 1)?;
    b.reducing(&r).add(1)?;
    b.aggregating(&a).add(1)?;
    for t in [90, 180, 270] {
        clock.set(t);
        assert_eq!(b.value(&s).get()?, Some(1), "at {t}");
        assert_eq!(b.list(&l).get()?, vec![1], "at {t}");
        assert_eq!(b.map(&m).get(&1)?, Some(1), "at {t}");
        assert_eq!(b.reducing(&r).get()?, Some(1), "at {t}");
        assert_eq!(b.aggregating(&a).get()?, Some((1, 1)), "at {t}");
    }
    clock.set(370);
    assert_eq!(b.value(&s).get()?, None);
    assert!(b.list(&l).get()?.is_empty());
    assert_eq!(b.map(&m).get(&1)?, None);
    assert_eq!(b.reducing(&r).get()?, None);
    assert_eq!(b.aggregating(&a).get()?, None);
    Ok(())
}

/// R63 (visibility): `ReturnExpiredIfNotCleanedUp` returns an expired value once; the read
/// removes it (R64). Background cleanup is off on the heap backend, and each state is read
/// before any write at its expiry time (an LSM compaction may clean up too, R71).
pub fn ttl_return_expired_if_not_cleaned_up<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let cfg = ttl(10)
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
        .incremental_cleanup(0);
    let s = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(cfg))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(cfg))?;
    b.set_current_key(&1);
    b.value(&s).update(5)?;
    clock.set(5);
    b.list(&l).add_all(vec![1, 2])?;
    clock.set(10);
    assert_eq!(
        b.entry_count()?,
        2,
        "expired but stored state counts under this visibility"
    );
    assert_eq!(b.value(&s).get()?, Some(5));
    assert_eq!(b.value(&s).get()?, None);
    clock.set(15);
    assert_eq!(b.list(&l).get()?, vec![1, 2]);
    assert!(b.list(&l).get()?.is_empty());
    Ok(())
}

/// R60: list elements expire one by one; what remains keeps its order.
pub fn ttl_list_elements_expire_one_by_one<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let l = b.register(ListStateDescriptor::<String>::new("l").with_ttl(ttl(100)))?;
    b.set_current_key(&3);
    b.list(&l).add("a".into())?;
    clock.set(40);
    b.list(&l).add_all(vec!["b".into(), "c".into()])?;
    clock.set(70);
    b.list(&l).add("d".into())?;
    clock.set(100);
    assert_eq!(b.list(&l).get()?, vec!["b", "c", "d"]);
    clock.set(140);
    assert_eq!(b.list(&l).get()?, vec!["d"]);
    clock.set(170);
    assert!(b.list(&l).get()?.is_empty());
    assert_eq!(b.entry_count()?, 0, "an emptied list is no entry (R22)");
    b.list(&l).update(vec!["e".into()])?;
    assert_eq!(b.list(&l).get()?, vec!["e"]);
    Ok(())
}

/// R60: map entries expire one by one; `contains`, `entries`, `is_empty` and the cursor see
/// only live ones.
pub fn ttl_map_entries_expire_one_by_one<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let m = b.register(MapStateDescriptor::<u32, String>::new("m").with_ttl(ttl(100)))?;
    b.set_current_key(&4);
    b.map(&m).put(1, "one".into())?;
    clock.set(50);
    b.map(&m)
        .put_all(vec![(2, "two".into()), (3, "three".into())])?;
    clock.set(100);
    assert!(!b.map(&m).contains(&1)?);
    assert!(b.map(&m).contains(&2)?);
    let mut keys = b.map(&m).keys()?;
    keys.sort();
    assert_eq!(keys, vec![2, 3]);
    let visited: Vec<u32> = b
        .map(&m)
        .iter()?
        .map(|e| e.map(|(k, _)| k))
        .collect::<Result<_>>()?;
    assert_eq!(visited.len(), 2);
    assert!(!b.map(&m).is_empty()?);
    clock.set(150);
    assert!(b.map(&m).is_empty()?);
    assert_eq!(b.map(&m).get(&2)?, None);
    assert_eq!(b.entry_count()?, 0);
    Ok(())
}

/// R62, R63: an expired reduced value or accumulator takes no part in the next add; the
/// result is stamped at the add.
pub fn ttl_reducing_and_aggregating_start_over_after_expiry<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).with_ttl(ttl(100)))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_ttl(ttl(100)))?;
    b.set_current_key(&5);
    b.reducing(&r).add(1)?;
    b.aggregating(&a).add(1)?;
    clock.set(50);
    b.reducing(&r).add(2)?;
    b.aggregating(&a).add(2)?;
    clock.set(149);
    assert_eq!(b.reducing(&r).get()?, Some(3));
    assert_eq!(b.aggregating(&a).get()?, Some((3, 2)));
    clock.set(150);
    // Added to without a read in between: the expired part is dropped, not folded in.
    b.reducing(&r).add(10)?;
    b.aggregating(&a).add(10)?;
    assert_eq!(b.reducing(&r).get()?, Some(10));
    assert_eq!(b.aggregating(&a).get()?, Some((10, 1)));
    clock.set(250);
    assert_eq!(b.reducing(&r).get()?, None);
    assert_eq!(b.aggregating(&a).get()?, None);
    Ok(())
}

/// R63: namespace merges of list, reducing and aggregating state with a TTL: expired sources
/// contribute nothing visible; the handle needs no special form.
pub fn ttl_namespace_merges_leave_expired_state_out<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let l = b.register(
        ListStateDescriptor::<u32>::new("l")
            .with_namespace::<u32>()
            .with_ttl(ttl(100)),
    )?;
    let r = b.register(
        ReducingStateDescriptor::<u64>::new("r", |a, b| a + b)
            .with_namespace::<u32>()
            .with_ttl(ttl(100)),
    )?;
    let a = b.register(
        AggregatingStateDescriptor::new("a", SumCount)
            .with_namespace::<u32>()
            .with_ttl(ttl(100)),
    )?;
    b.set_current_key(&6);
    b.list(&l).namespace(&1).add(1)?;
    b.reducing(&r).namespace(&1).add(1)?;
    b.aggregating(&a).namespace(&1).add(1)?;
    clock.set(60);
    b.list(&l).namespace(&2).add(2)?;
    b.reducing(&r).namespace(&2).add(2)?;
    b.aggregating(&a).namespace(&2).add(2)?;
    clock.set(120); // namespace 1 has expired, namespace 2 has not
    b.merge_namespaces(l, &0, &[1, 2])?;
    b.merge_namespaces(r, &0, &[1, 2])?;
    b.merge_namespaces(a, &0, &[1, 2])?;
    assert_eq!(b.list(&l).namespace(&0).get()?, vec![2]);
    assert_eq!(b.reducing(&r).namespace(&0).get()?, Some(2));
    assert_eq!(b.aggregating(&a).namespace(&0).get()?, Some((2, 1)));
    for ns in [1, 2] {
        assert!(b.list(&l).namespace(&ns).get()?.is_empty());
        assert_eq!(b.reducing(&r).namespace(&ns).get()?, None);
    }
    // `clear` and `keys` take the handle as registered too.
    assert_eq!(b.keys(l, &0)?, vec![6]);
    b.clear(l, &0)?;
    assert!(b.keys(l, &0)?.is_empty());
    Ok(())
}

/// R65: a snapshot leaves out what has expired at its instant (whole entries, list elements,
/// map entries) and keeps the timestamps of the rest; the live state is not changed by it.
pub fn ttl_snapshots_leave_expired_state_out<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let cfg = ttl(100)
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
        .incremental_cleanup(0);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(cfg))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(cfg))?;
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(cfg))?;
    b.set_current_key(&1);
    b.value(&v).update(1)?;
    b.list(&l).add(1)?;
    b.map(&m).put(1, 1)?;
    b.set_current_key(&2);
    b.value(&v).update(2)?;
    clock.set(50);
    b.list(&l).add(2)?;
    b.map(&m).put(2, 2)?;
    b.set_current_key(&1);
    b.list(&l).add(3)?;
    b.map(&m).put(3, 3)?;
    clock.set(100);
    let snapshot = b.snapshot_state()?;
    let ttl_millis = snapshot
        .state("v")
        .and_then(|s| s.ttl_millis())
        .map(|t| t.get());
    assert_eq!(ttl_millis, Some(100), "the snapshot records the TTL");
    let values = live_entries(&mut b, "v");
    assert!(values.is_empty(), "both values expired: {values:?}");
    let lists = live_entries(&mut b, "l");
    let mut list_states: Vec<EncodedState> = lists.into_values().collect();
    list_states.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        list_states,
        vec![
            EncodedState::List(vec![stamped(&2u32, 50)]),
            EncodedState::List(vec![stamped(&3u32, 50)]),
        ]
    );
    let maps = live_entries(&mut b, "m");
    assert_eq!(maps.len(), 2);
    for state in maps.values() {
        match state {
            EncodedState::Map(pairs) => assert_eq!(pairs.len(), 1, "{pairs:?}"),
            other => panic!("{other:?}"),
        }
    }
    // The live state still holds the expired value (visibility returns it once).
    assert_eq!(b.value(&v).get()?, Some(1));
    Ok(())
}

/// R60, R70: a TTL of 0 is refused; the same name without a TTL is another type; the
/// primitives refuse a TTL state's handle (the accessors, `clear`, `keys` and
/// `merge_namespaces` take it).
pub fn ttl_registration_rules<F: Factory>(f: &F) -> Result<()> {
    let (mut b, _clock) = open_at_zero(f);
    let zero = b.register(ValueStateDescriptor::<u64>::new("z").with_ttl(ttl(0)));
    assert!(matches!(zero, Err(Error::InvalidArgument(_))), "{zero:?}");
    let s = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(5)))?;
    assert_eq!(b.state_ttl(s.id()).map(|t| t.ttl_millis()), Some(5));
    let again = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(9)))?;
    assert_eq!(again, s, "registering again returns the same handle");
    assert_eq!(
        b.state_ttl(s.id()).map(|t| t.ttl_millis()),
        Some(9),
        "and the newest TTL"
    );
    let plain = b.register(ValueStateDescriptor::<u64>::new("v"));
    assert!(
        matches!(plain, Err(Error::StateTypeMismatch { .. })),
        "{plain:?}"
    );
    b.set_current_key(&1);
    assert!(matches!(
        b.value_get(s, &()),
        Err(Error::UnknownState { .. })
    ));
    let p = b.register(ValueStateDescriptor::<u64>::new("p"))?;
    assert_eq!(b.state_ttl(p.id()), None);
    Ok(())
}

/// R60, R63: registering a reducing or aggregating state again with another TTL makes its
/// function judge expiry by the new TTL, both ways.
pub fn ttl_reregistration_takes_the_new_ttl_in_reduce_and_aggregate<F: Factory>(
    f: &F,
) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let long = ttl(3_600_000).incremental_cleanup(0);
    let short = ttl(10).incremental_cleanup(0);
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).with_ttl(long))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_ttl(long))?;
    b.set_current_key(&1);
    b.reducing(&r).add(1)?;
    b.aggregating(&a).add(1)?;
    // Shorter now: the value of t=0 has expired at 100 and must not be folded in.
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).with_ttl(short))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_ttl(short))?;
    clock.set(100);
    b.reducing(&r).add(2)?;
    b.aggregating(&a).add(2)?;
    assert_eq!(b.reducing(&r).get()?, Some(2));
    assert_eq!(b.aggregating(&a).get()?, Some((2, 1)));
    // Longer again: the value of t=100 lives at 200 and must be folded in.
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).with_ttl(long))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_ttl(long))?;
    clock.set(200);
    b.reducing(&r).add(5)?;
    b.aggregating(&a).add(5)?;
    assert_eq!(b.reducing(&r).get()?, Some(7));
    assert_eq!(b.aggregating(&a).get()?, Some((7, 2)));
    Ok(())
}

/// R80, R63, R64: the borrowing reads of a state with a TTL see only live state, and remove
/// what expired as `get` does.
pub fn ttl_borrowing_reads_see_only_live_state<F: Factory>(f: &F) -> Result<()> {
    let (mut b, clock) = open_at_zero(f);
    let v = b.register(ValueStateDescriptor::<String>::new("v").with_ttl(ttl(100)))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl(100)))?;
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(ttl(100)))?;
    b.set_current_key(&3);
    b.value(&v).update("old".into())?;
    b.list(&l).add(1)?;
    b.map(&m).put(1, 10)?;
    clock.set(50);
    b.list(&l).add(2)?;
    b.map(&m).put(2, 20)?;
    clock.set(120);
    assert_eq!(b.value(&v).read(|x| x.cloned())?, None);
    assert_eq!(b.list(&l).read(<[u32]>::to_vec)?, vec![2]);
    assert_eq!(b.map(&m).read(&1, |x| x.copied())?, None);
    assert_eq!(b.map(&m).read(&2, |x| x.copied())?, Some(20));
    let mut seen = Vec::new();
    b.map(&m).for_each(|k, x| seen.push((*k, *x)))?;
    assert_eq!(seen, vec![(2, 20)]);
    clock.set(0);
    assert_eq!(
        b.value(&v).get()?,
        None,
        "the read removed the expired value (R64)"
    );
    assert_eq!(b.list(&l).get()?, vec![2], "and the expired element");
    assert_eq!(b.map(&m).get(&1)?, None, "and the expired entry");
    Ok(())
}
