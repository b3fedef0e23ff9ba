//! Timers: event-time and processing-time timers per key and namespace, deduplicated, fired in
//! timestamp order with the current key set to the timer's key (Flink's
//! `InternalTimerService`; spec/state-semantics.md R72–R78).
//!
//! A [`TimerService`] keeps its timers in a keyed state of the backend (`timers:<name>`, one
//! entry per timer: the timer's key, a [`TimerSlot`] as namespace, no value), so that they are
//! part of every snapshot, restored with the keyed state and moved with their key group on a
//! rescale, on either backend. Beside it the service keeps, in memory, the timers of each domain
//! in the order they fire; registering the service again on a restored backend rebuilds that
//! order from the restored entries.
//!
//! ```
//! use flowstate::*;
//! use flowstate::timer::{TimerService, TimeDomain};
//!
//! let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
//! let mut timers = TimerService::<u64, TimeWindow>::register(&mut backend, "windows")?;
//! let w = TimeWindow::new(0, 60_000);
//! backend.set_current_key(&7);
//! timers.register_event_time_timer(&mut backend, &w, w.end - 1)?;
//! timers.register_event_time_timer(&mut backend, &w, w.end - 1)?; // deduplicated
//! let mut fired = Vec::new();
//! timers.advance_watermark(&mut backend, 59_999, |backend, _timers, timer| {
//!     assert_eq!(backend.current_key(), Some(&7)); // the timer's key is current
//!     fired.push((timer.key, timer.namespace, timer.timestamp));
//!     Ok(())
//! })?;
//! assert_eq!(fired, vec![(7, w, 59_999)]);
//! assert_eq!(timers.len(TimeDomain::EventTime), 0);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::marker::PhantomData;

use crate::backend::KeyedStateBackend;
use crate::codec::{to_bytes, Codec, CodecError};
use crate::error::{Error, Result};
use crate::state::{Key, Namespace, ValueState, ValueStateDescriptor};

/// The time a timer fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark reaches its timestamp ([`TimerService::advance_watermark`]).
    EventTime,
    /// Fires when processing time reaches its timestamp
    /// ([`TimerService::advance_processing_time`]).
    ProcessingTime,
}

impl TimeDomain {
    fn code(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }

    fn index(self) -> usize {
        usize::from(self.code())
    }
}

/// Where a timer sits in the service's keyed state: its domain, timestamp and namespace (the
/// namespace of the state's entry). Codec `timer<NAME>`: the domain byte (`00` event time,
/// `01` processing time), the timestamp as 8 big-endian bytes with the sign bit flipped (so that
/// byte order is time order), then the namespace's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimerSlot<N> {
    /// The time domain.
    pub domain: TimeDomain,
    /// When the timer fires, in milliseconds.
    pub timestamp: i64,
    /// The timer's namespace (a window, say).
    pub namespace: N,
}

/// The length of a [`TimerSlot`]'s encoding before the namespace.
const SLOT_HEADER_LEN: usize = 9;

fn timestamp_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn timestamp_of(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

impl<N: Codec> Codec for TimerSlot<N> {
    fn codec_name() -> Cow<'static, str> {
        Cow::Owned(format!("timer<{}>", N::codec_name()))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.domain.code());
        out.extend_from_slice(&timestamp_bytes(self.timestamp));
        self.namespace.encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let domain = match u8::decode_from(input)? {
            0 => TimeDomain::EventTime,
            1 => TimeDomain::ProcessingTime,
            other => {
                return Err(CodecError::Invalid(Cow::Owned(format!(
                    "timer domain {other} is neither 0 nor 1"
                ))))
            }
        };
        let ts: [u8; 8] = take8(input)?;
        Ok(TimerSlot {
            domain,
            timestamp: timestamp_of(ts),
            namespace: N::decode_from(input)?,
        })
    }
}

fn take8(input: &mut &[u8]) -> std::result::Result<[u8; 8], CodecError> {
    if input.len() < 8 {
        return Err(CodecError::Truncated {
            needed: 8,
            available: input.len() as u64,
        });
    }
    let (head, tail) = input.split_at(8);
    *input = tail;
    let mut out = [0u8; 8];
    out.copy_from_slice(head);
    Ok(out)
}

impl<N: Namespace> Namespace for TimerSlot<N> {}

/// A timer that fires: its key (current while it is handled), namespace, time and domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The key the timer was registered for.
    pub key: K,
    /// The timer's namespace.
    pub namespace: N,
    /// When it was set to fire.
    pub timestamp: i64,
    /// Its domain.
    pub domain: TimeDomain,
}

/// One pending timer in firing order: timestamp, then the key's and the namespace's bytes.
type Queued = (i64, Vec<u8>, Vec<u8>);

/// The timers of one operator: registered per current key and namespace, deduplicated, fired
/// in order of (timestamp, key bytes, namespace bytes) per domain. See the module documentation.
#[derive(Debug)]
pub struct TimerService<K, N> {
    name: String,
    state: ValueState<(), TimerSlot<N>>,
    queues: [BTreeSet<Queued>; 2],
    _key: PhantomData<fn() -> K>,
}

/// The name of the keyed state that holds the timers of service `name`.
pub fn state_name(name: &str) -> String {
    format!("timers:{name}")
}

impl<K: Key, N: Namespace> TimerService<K, N> {
    /// Registers the timer service `name` with `backend` (its state `timers:<name>`), and takes
    /// up the timers a restored backend holds for it: those of the key groups it owns.
    pub fn register<B: KeyedStateBackend<K>>(backend: &mut B, name: &str) -> Result<Self> {
        let state_name = state_name(name);
        let state = backend.register(
            ValueStateDescriptor::<()>::new(state_name.clone()).with_namespace::<TimerSlot<N>>(),
        )?;
        let mut service = TimerService {
            name: name.to_owned(),
            state,
            queues: [BTreeSet::new(), BTreeSet::new()],
            _key: PhantomData,
        };
        // The restored timers: every entry of the state, read from a frozen view.
        let view = backend.snapshot_state()?;
        if let Some(table) = view.state(&state_name) {
            let mut failure = None;
            for kg in backend.key_group_range().iter() {
                table.visit_key_group(kg, &mut |e| {
                    if failure.is_some() {
                        return;
                    }
                    match TimerSlot::<N>::decode(&e.namespace) {
                        Ok(slot) => {
                            let ns = e.namespace[SLOT_HEADER_LEN..].to_vec();
                            service.queues[slot.domain.index()].insert((slot.timestamp, e.key, ns));
                        }
                        Err(source) => {
                            failure = Some(Error::Codec {
                                what: format!("a timer of service '{name}' in key group {kg}"),
                                source,
                            })
                        }
                    }
                })?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(service)
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of pending timers of `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        self.queues[domain.index()].len()
    }

    /// Whether no timer of either domain is pending.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(BTreeSet::is_empty)
    }

    /// The time of the earliest pending timer of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.queues[domain.index()].first().map(|q| q.0)
    }

    /// Registers a timer of `domain` at `timestamp` for the current key in `namespace`; a timer
    /// already registered there is not added twice (R73).
    pub fn register_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let slot = TimerSlot {
            domain,
            timestamp,
            namespace: namespace.clone(),
        };
        backend.value(&self.state).namespace(&slot).update(())?;
        let key = current_key_bytes(backend)?;
        self.queues[domain.index()].insert((timestamp, key, to_bytes(namespace)));
        Ok(())
    }

    /// Deletes the timer of `domain` at `timestamp` for the current key in `namespace`, if
    /// there is one.
    pub fn delete_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let slot = TimerSlot {
            domain,
            timestamp,
            namespace: namespace.clone(),
        };
        backend.value(&self.state).namespace(&slot).clear()?;
        let key = current_key_bytes(backend)?;
        self.queues[domain.index()].remove(&(timestamp, key, to_bytes(namespace)));
        Ok(())
    }

    /// [`register_timer`](Self::register_timer) in event time.
    pub fn register_event_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.register_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`register_timer`](Self::register_timer) in processing time.
    pub fn register_processing_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.register_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in event time.
    pub fn delete_event_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.delete_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in processing time.
    pub fn delete_processing_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.delete_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// Removes the earliest timer of `domain` due at `time` (timestamp at most `time`), makes
    /// its key the current key and returns it; `None` if no timer is due. The caller handles
    /// it (and may register more timers) before polling again.
    pub fn poll<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Option<Timer<K, N>>> {
        let queue = &mut self.queues[domain.index()];
        if queue.first().is_none_or(|q| q.0 > time) {
            return Ok(None);
        }
        let Some((timestamp, key_bytes, ns_bytes)) = queue.pop_first() else {
            return Ok(None);
        };
        let bad = |what: &str, source| Error::Codec {
            what: format!("the {what} of a timer of service '{}'", self.name),
            source,
        };
        let key = K::decode(&key_bytes).map_err(|e| bad("key", e))?;
        let namespace = N::decode(&ns_bytes).map_err(|e| bad("namespace", e))?;
        backend.set_current_key(&key);
        let slot = TimerSlot {
            domain,
            timestamp,
            namespace: namespace.clone(),
        };
        backend.value(&self.state).namespace(&slot).clear()?;
        Ok(Some(Timer {
            key,
            namespace,
            timestamp,
            domain,
        }))
    }

    /// Fires every event-time timer due at `watermark`, in order, calling `on_timer` with the
    /// backend (the timer's key current), the service (to register or delete timers; one due
    /// at `watermark` fires in this same call) and the timer. Returns how many fired.
    pub fn advance_watermark<B, F>(
        &mut self,
        backend: &mut B,
        watermark: i64,
        on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        self.advance(backend, TimeDomain::EventTime, watermark, on_timer)
    }

    /// Fires every processing-time timer due at `now` (see
    /// [`advance_watermark`](Self::advance_watermark)).
    pub fn advance_processing_time<B, F>(
        &mut self,
        backend: &mut B,
        now: i64,
        on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        self.advance(backend, TimeDomain::ProcessingTime, now, on_timer)
    }

    fn advance<B, F>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        time: i64,
        mut on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        let mut fired = 0;
        while let Some(timer) = self.poll(backend, domain, time)? {
            on_timer(backend, self, timer)?;
            fired += 1;
        }
        Ok(fired)
    }
}

/// The encoding of the backend's current key (the state access before it checked there is one).
fn current_key_bytes<K: Key, B: KeyedStateBackend<K>>(backend: &B) -> Result<Vec<u8>> {
    backend
        .current_key()
        .map(to_bytes)
        .ok_or(Error::NoCurrentKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_encode_in_time_order() {
        let enc = |ts: i64| {
            to_bytes(&TimerSlot {
                domain: TimeDomain::EventTime,
                timestamp: ts,
                namespace: 3u8,
            })
        };
        let mut times = [i64::MIN, -5, -1, 0, 1, 7, 1 << 40, i64::MAX];
        let mut encoded: Vec<Vec<u8>> = times.iter().map(|&t| enc(t)).collect();
        encoded.sort();
        times.sort();
        for (bytes, t) in encoded.iter().zip(times) {
            assert_eq!(TimerSlot::<u8>::decode(bytes).unwrap().timestamp, t);
        }
        assert_eq!(TimerSlot::<u8>::codec_name(), "timer<u8>");
        assert!(TimerSlot::<u8>::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(TimerSlot::<u8>::decode(&[0, 0, 0]).is_err());
    }
}
