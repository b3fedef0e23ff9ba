//! Conformance cases of timers (spec/state-semantics.md R72–R78), run on every backend
//! configuration.

use flowstate::timer::{TimeDomain, Timer, TimerService};
use flowstate::*;

use super::{open, Factory};

fn fired<B: KeyedStateBackend<u64>>(
    b: &mut B,
    timers: &mut TimerService<u64, u32>,
    domain: TimeDomain,
    time: i64,
) -> Result<Vec<(u64, u32, i64)>> {
    let mut out = Vec::new();
    let on_timer = |b: &mut B, _: &mut TimerService<u64, u32>, t: Timer<u64, u32>| {
        // R75: the timer's key is the current key while it is handled.
        assert_eq!(b.current_key(), Some(&t.key));
        assert_eq!(t.domain, domain);
        out.push((t.key, t.namespace, t.timestamp));
        Ok(())
    };
    match domain {
        TimeDomain::EventTime => timers.advance_watermark(b, time, on_timer)?,
        TimeDomain::ProcessingTime => timers.advance_processing_time(b, time, on_timer)?,
    };
    Ok(out)
}

/// R73, R74, R75: timers are deduplicated and fire once, in (timestamp, key bytes, namespace
/// bytes) order, when the watermark reaches them, with their key current.
pub fn timers_fire_once_in_order<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let mut timers = TimerService::<u64, u32>::register(&mut b, "t")?;
    for (key, ns, ts) in [
        (3u64, 1u32, 20i64),
        (1, 2, 10),
        (2, 1, 10),
        (1, 1, 10),
        (5, 0, -4),
    ] {
        b.set_current_key(&key);
        timers.register_event_time_timer(&mut b, &ns, ts)?;
        timers.register_event_time_timer(&mut b, &ns, ts)?; // a duplicate
    }
    assert_eq!(timers.len(TimeDomain::EventTime), 5);
    assert_eq!(timers.next_timestamp(TimeDomain::EventTime), Some(-4));
    assert!(fired(&mut b, &mut timers, TimeDomain::EventTime, -5)?.is_empty());
    // Ties at 10 in key byte order (u64 little-endian: 1, 2), then namespace bytes.
    assert_eq!(
        fired(&mut b, &mut timers, TimeDomain::EventTime, 10)?,
        vec![(5, 0, -4), (1, 1, 10), (1, 2, 10), (2, 1, 10)]
    );
    assert_eq!(
        fired(&mut b, &mut timers, TimeDomain::EventTime, i64::MAX)?,
        vec![(3, 1, 20)]
    );
    assert!(timers.is_empty());
    assert!(fired(&mut b, &mut timers, TimeDomain::EventTime, i64::MAX)?.is_empty());
    Ok(())
}

/// R73, R76: a deleted timer does not fire; the two domains are independent.
pub fn timers_deleted_do_not_fire_and_domains_are_apart<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let mut timers = TimerService::<u64, u32>::register(&mut b, "t")?;
    b.set_current_key(&1);
    timers.register_event_time_timer(&mut b, &0, 5)?;
    timers.register_event_time_timer(&mut b, &0, 6)?;
    timers.register_processing_time_timer(&mut b, &0, 5)?;
    timers.delete_event_time_timer(&mut b, &0, 5)?;
    timers.delete_event_time_timer(&mut b, &0, 99)?; // deleting nothing is no error
    assert_eq!(
        fired(&mut b, &mut timers, TimeDomain::EventTime, 100)?,
        vec![(1, 0, 6)]
    );
    assert_eq!(
        fired(&mut b, &mut timers, TimeDomain::ProcessingTime, 5)?,
        vec![(1, 0, 5)]
    );
    Ok(())
}

/// R77: a timer registered while handling another fires in the same advance if it is due.
pub fn timers_registered_while_firing_fire_if_due<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let mut timers = TimerService::<u64, u32>::register(&mut b, "t")?;
    b.set_current_key(&9);
    timers.register_event_time_timer(&mut b, &0, 1)?;
    let mut seen = Vec::new();
    timers.advance_watermark(&mut b, 10, |b, timers, t| {
        seen.push(t.timestamp);
        if t.timestamp < 8 {
            // Chain: each timer sets the next, 3 ms later, for the same key.
            timers.register_event_time_timer(b, &t.namespace, t.timestamp + 3)?;
        }
        Ok(())
    })?;
    assert_eq!(seen, vec![1, 4, 7, 10]);
    assert!(timers.is_empty());
    Ok(())
}

/// R78: the timers are entries of the state `timers:<name>`: a snapshot holds them, and a
/// second service registered on the same backend takes them up.
pub fn timers_are_state<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let mut timers = TimerService::<u64, u32>::register(&mut b, "t")?;
    for key in 0..20u64 {
        b.set_current_key(&key);
        timers.register_event_time_timer(&mut b, &1, key as i64)?;
    }
    let snapshot = b.snapshot_state()?;
    assert_eq!(
        snapshot
            .state("timers:t")
            .map(|s| s.entry_count())
            .transpose()?,
        Some(20)
    );
    let mut again = TimerService::<u64, u32>::register(&mut b, "t")?;
    assert_eq!(again.len(TimeDomain::EventTime), 20);
    assert_eq!(
        fired(&mut b, &mut again, TimeDomain::EventTime, 4)?.len(),
        5
    );
    Ok(())
}
