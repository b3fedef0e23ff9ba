//! Timers: event-time and processing-time timers per key and namespace, deduplicated, fired in
//! timestamp order with the current key set to the timer's key (Flink's
//! `InternalTimerService`; spec/state-semantics.md R72–R78).
//!
//! A [`TimerService`] keeps its timers in a keyed state of the backend (`timers:<name>`, one
//! entry per timer: the timer's key, a [`TimerSlot`] as namespace, no value), so that they are
//! part of every snapshot, restored with the keyed state and moved with their key group on a
//! rescale, on either backend. Beside it the service keeps, in memory, the timers of each domain
//! in an ordered set in the order they fire; registering the service again on a restored backend
//! rebuilds it from the restored entries.
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
use crate::codec::{Codec, CodecError};
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
        let (domain, timestamp) = decode_slot_header(input)?;
        Ok(TimerSlot {
            domain,
            timestamp,
            namespace: N::decode_from(input)?,
        })
    }
}

/// Decodes the domain and timestamp that start a [`TimerSlot`]'s encoding (before the
/// namespace), advancing `input`.
pub(crate) fn decode_slot_header(
    input: &mut &[u8],
) -> std::result::Result<(TimeDomain, i64), CodecError> {
    let domain = match u8::decode_from(input)? {
        0 => TimeDomain::EventTime,
        1 => TimeDomain::ProcessingTime,
        other => {
            return Err(CodecError::Invalid(Cow::Owned(format!(
                "timer domain {other} is neither 0 nor 1"
            ))))
        }
    };
    let mut ts = [0u8; 8];
    ts.copy_from_slice(crate::codec::take(input, 8)?);
    Ok((domain, timestamp_of(ts)))
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

/// Bytes of a queued timer kept inline up to this length (a `u64` key and a `TimeWindow`
/// namespace take 24), so that the ordered set compares them without following a pointer.
const INLINE: usize = 32;

/// The key's and the namespace's bytes of a queued timer, inline when short.
#[derive(Debug, Clone)]
enum Packed {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Packed {
    fn new(key: &[u8], ns: &[u8]) -> Packed {
        let len = key.len() + ns.len();
        if len <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key);
            buf[key.len()..len].copy_from_slice(ns);
            Packed::Inline {
                len: len as u8,
                buf,
            }
        } else {
            Packed::Heap([key, ns].concat().into_boxed_slice())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, buf } => &buf[..usize::from(*len)],
            Packed::Heap(b) => b,
        }
    }
}

/// One pending timer, ordered as it fires: timestamp, then the key's length and bytes, then
/// the namespace's bytes (with keys of one length, as most key types have, that is key bytes
/// then namespace bytes). The first 16 bytes of key and namespace are also kept as one
/// integer, so that most comparisons compare integers.
#[derive(Debug, Clone)]
struct Queued {
    timestamp: i64,
    key_len: u32,
    prefix: u128,
    bytes: Packed,
}

impl Queued {
    fn new(timestamp: i64, key: &[u8], ns: &[u8]) -> Queued {
        let bytes = Packed::new(key, ns);
        let mut head = [0u8; 16];
        let all = bytes.bytes();
        let n = all.len().min(16);
        head[..n].copy_from_slice(&all[..n]);
        Queued {
            timestamp,
            key_len: key.len() as u32,
            prefix: u128::from_be_bytes(head),
            bytes,
        }
    }

    fn key(&self) -> &[u8] {
        &self.bytes.bytes()[..self.key_len as usize]
    }

    fn namespace(&self) -> &[u8] {
        &self.bytes.bytes()[self.key_len as usize..]
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp
            && self.key_len == other.key_len
            && self.bytes.bytes() == other.bytes.bytes()
    }
}

/// The pending timers of one domain, in firing order: an ordered set, which deduplicates,
/// deletes and pops the earliest in O(log n). (A binary heap with a set of live timers beside it,
/// Flink's `HeapPriorityQueueSet` idea, registered faster but fired slower here: benches/README.md,
/// "Timers".)
#[derive(Debug, Default)]
struct Queue {
    set: BTreeSet<Queued>,
}

impl Queue {
    fn insert(&mut self, q: Queued) {
        self.set.insert(q);
    }

    fn remove(&mut self, q: &Queued) {
        self.set.remove(q);
    }

    fn first_timestamp(&self) -> Option<i64> {
        self.set.first().map(|q| q.timestamp)
    }

    /// The earliest timer if it is due at `time`, removed.
    fn pop_due(&mut self, time: i64) -> Option<Queued> {
        if self.set.first()?.timestamp > time {
            return None;
        }
        self.set.pop_first()
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then(self.key_len.cmp(&other.key_len))
            .then(self.prefix.cmp(&other.prefix))
            .then_with(|| self.bytes.bytes().cmp(other.bytes.bytes()))
    }
}

/// The timers of one operator: registered per current key and namespace, deduplicated, fired
/// in order of (timestamp, key length, key bytes, namespace bytes) per domain. See the module
/// documentation.
#[derive(Debug)]
pub struct TimerService<K, N> {
    name: String,
    state: ValueState<(), TimerSlot<N>>,
    queues: [Queue; 2],
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
            queues: [Queue::default(), Queue::default()],
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
                            let ns = &e.namespace[SLOT_HEADER_LEN..];
                            service.queues[slot.domain.index()].insert(Queued::new(
                                slot.timestamp,
                                &e.key,
                                ns,
                            ));
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
        self.queues.iter().all(|q| q.len() == 0)
    }

    /// The time of the earliest pending timer of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.queues[domain.index()].first_timestamp()
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
        let queued = self.queued(backend, timestamp, namespace)?;
        self.queues[domain.index()].insert(queued);
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
        let queued = self.queued(backend, timestamp, namespace)?;
        self.queues[domain.index()].remove(&queued);
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
        let Some(queued) = self.queues[domain.index()].pop_due(time) else {
            return Ok(None);
        };
        let timestamp = queued.timestamp;
        let (key_bytes, ns_bytes) = (queued.key(), queued.namespace());
        let bad = |what: &str, source| Error::Codec {
            what: format!("the {what} of a timer of service '{}'", self.name),
            source,
        };
        let decoded = K::decode(key_bytes)
            .map_err(|e| bad("key", e))
            .and_then(|key| Ok((key, N::decode(ns_bytes).map_err(|e| bad("namespace", e))?)));
        let (key, namespace) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                // Undecodable (a damaged restore): keep it pending, as the state still does.
                self.queues[domain.index()].insert(queued);
                return Err(e);
            }
        };
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

impl<K: Key, N: Namespace> TimerService<K, N> {
    /// The queue entry of a timer of the current key (the state access before it checked that
    /// there is one).
    fn queued<B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        timestamp: i64,
        namespace: &N,
    ) -> Result<Queued> {
        let key = backend.current_key().ok_or(Error::NoCurrentKey)?;
        let mut buf = Vec::with_capacity(INLINE);
        key.encode(&mut buf);
        let key_len = buf.len();
        namespace.encode(&mut buf);
        Ok(Queued::new(timestamp, &buf[..key_len], &buf[key_len..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::to_bytes;

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

    #[test]
    fn queued_timers_order_by_time_key_length_key_then_namespace_inline_or_not() {
        let long = vec![7u8; 40];
        let mut set = BTreeSet::new();
        for q in [
            Queued::new(2, b"a", b"z"),
            Queued::new(1, &long, b"b"),
            Queued::new(1, b"b", b""),
            Queued::new(1, b"ab", b"a"),
            Queued::new(1, b"a", &long),
            Queued::new(1, b"a", b"c"),
        ] {
            assert!(set.insert(q));
        }
        assert!(
            !set.insert(Queued::new(1, b"a", b"c")),
            "equal timers are one"
        );
        assert!(!set.insert(Queued::new(1, &long, b"b")), "inline or not");
        let order: Vec<(i64, Vec<u8>, Vec<u8>)> = set
            .iter()
            .map(|q| (q.timestamp, q.key().to_vec(), q.namespace().to_vec()))
            .collect();
        assert_eq!(
            order,
            vec![
                (1, b"a".to_vec(), long.clone()),
                (1, b"a".to_vec(), b"c".to_vec()),
                (1, b"b".to_vec(), vec![]),
                (1, b"ab".to_vec(), b"a".to_vec()),
                (1, long.clone(), b"b".to_vec()),
                (2, b"a".to_vec(), b"z".to_vec()),
            ]
        );
    }
}
