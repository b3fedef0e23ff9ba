//! State time-to-live: [`TtlConfig`] on a descriptor makes every value, list element and map
//! entry of the state expire `ttl` after it was last written (or read, with
//! [`TtlUpdate::OnReadAndWrite`]), by the backend's [`Clock`].
//!
//! A state with a TTL stores each value, list element or map value as a [`TtlValue`]: the time
//! of its last update (milliseconds, `u64` LE) followed by the value, under the codec name
//! `ttl<NAME>` (spec/formats.md section 2.2). The accessors unwrap it and apply the rules of
//! spec/state-semantics.md (R60–R71): expired state is invisible unless the visibility says
//! otherwise, and a read that finds expired state removes it. Full snapshots leave expired
//! state out (`state/ttl_filter.rs`).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flowstate::*;
//!
//! let clock = Arc::new(ManualClock::new(0));
//! let mut backend = Backend::<u64>::open(BackendConfig::heap().clock(clock.clone()))?;
//! let last = backend.register(
//!     ValueStateDescriptor::<u64>::new("last-seen").with_ttl(TtlConfig::after(Duration::from_secs(60))),
//! )?;
//! backend.set_current_key(&7);
//! backend.value(&last).update(1)?;
//! clock.advance(59_999);
//! assert_eq!(backend.value(&last).get()?, Some(1));
//! clock.advance(1);
//! assert_eq!(backend.value(&last).get()?, None); // expired, and removed by the read
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::reducing::Reducer;
use super::{AggregateFunction, Key, StateId};
use crate::clock::Clock;
use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::KeyedStateBackend;

/// When an entry's timestamp is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlUpdate {
    /// On every write: update, add, put, and the result of a reduce, add or merge (the default;
    /// Flink's `OnCreateAndWrite`).
    #[default]
    OnCreateAndWrite,
    /// On every write and on every read that returns the entry (Flink's `OnReadAndWrite`).
    OnReadAndWrite,
}

/// Whether a read may return state that has expired but is still stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlVisibility {
    /// Expired state is never returned: it behaves as absent on every read path (the default).
    #[default]
    NeverReturnExpired,
    /// A read returns expired state it still finds (and removes it, as every read does).
    ReturnExpiredIfNotCleanedUp,
}

/// The time-to-live of a state: how long an entry lives after its last update, when the
/// update happens, and whether expired state may be read.
///
/// ```
/// use std::time::Duration;
/// use flowstate::{TtlConfig, TtlUpdate, TtlVisibility};
/// let ttl = TtlConfig::after(Duration::from_secs(3600))
///     .update(TtlUpdate::OnReadAndWrite)
///     .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
///     .incremental_cleanup(10);
/// assert_eq!(ttl.ttl_millis(), 3_600_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TtlConfig {
    ttl_millis: u64,
    update: TtlUpdate,
    visibility: TtlVisibility,
    incremental_cleanup: usize,
}

/// Entries of a state the heap backend checks for expiry on each access, by default (Flink's
/// default incremental cleanup size).
pub const DEFAULT_INCREMENTAL_CLEANUP: usize = 5;

impl TtlConfig {
    /// Entries expire `ttl` after their last update (whole milliseconds; at least 1 ms, or
    /// registration fails with [`Error::InvalidArgument`]). Updated on create and write,
    /// never returned once expired, incremental cleanup of
    /// [`DEFAULT_INCREMENTAL_CLEANUP`] entries per access.
    pub fn after(ttl: Duration) -> Self {
        TtlConfig {
            ttl_millis: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            update: TtlUpdate::default(),
            visibility: TtlVisibility::default(),
            incremental_cleanup: DEFAULT_INCREMENTAL_CLEANUP,
        }
    }

    /// When the timestamp is set.
    pub fn update(mut self, update: TtlUpdate) -> Self {
        self.update = update;
        self
    }

    /// Whether expired state may be read.
    pub fn visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// How many further entries of the state the heap backend checks (and cleans up) on each
    /// access to it; 0 turns incremental cleanup off. The LSM backend cleans up in compaction
    /// instead and ignores it.
    pub fn incremental_cleanup(mut self, entries: usize) -> Self {
        self.incremental_cleanup = entries;
        self
    }

    /// The time to live in milliseconds.
    pub fn ttl_millis(&self) -> u64 {
        self.ttl_millis
    }

    /// When the timestamp is set.
    pub fn update_type(&self) -> TtlUpdate {
        self.update
    }

    /// Whether expired state may be read.
    pub fn visibility_type(&self) -> TtlVisibility {
        self.visibility
    }

    /// Entries the heap backend checks per access.
    pub fn incremental_cleanup_size(&self) -> usize {
        self.incremental_cleanup
    }

    /// Whether an entry last updated at `timestamp` has expired at `now`: `now >= timestamp +
    /// ttl` (a timestamp in the future is fresh).
    pub fn is_expired(&self, timestamp: u64, now: u64) -> bool {
        now >= timestamp.saturating_add(self.ttl_millis)
    }

    /// Whether reads refresh the timestamp.
    pub(crate) fn refresh_on_read(&self) -> bool {
        self.update == TtlUpdate::OnReadAndWrite
    }

    /// Whether a read may return expired state.
    pub(crate) fn returns_expired(&self) -> bool {
        self.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp
    }

    /// Refuses a TTL below one millisecond.
    pub(crate) fn validate(&self, state: &str) -> Result<()> {
        if self.ttl_millis == 0 {
            return Err(Error::InvalidArgument(format!(
                "the TTL of state '{state}' must be at least 1 ms"
            )));
        }
        Ok(())
    }
}

/// A value with the time of its last update: how a state with a TTL stores each value, list
/// element or map value. Codec name `ttl<NAME>`; bytes: the timestamp (`u64` LE, milliseconds)
/// then the value's own encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TtlValue<V> {
    /// When the value was last updated, in the backend clock's milliseconds.
    pub timestamp: u64,
    /// The value.
    pub value: V,
}

impl<V> TtlValue<V> {
    /// `value` stamped `timestamp`.
    pub fn new(value: V, timestamp: u64) -> Self {
        TtlValue { timestamp, value }
    }
}

/// The length of the timestamp that starts a [`TtlValue`]'s encoding.
pub const TTL_TIMESTAMP_LEN: usize = 8;

impl<V: Codec> Codec for TtlValue<V> {
    const VERSION: u32 = 1;
    fn codec_name() -> Cow<'static, str> {
        Cow::Owned(format!("ttl<{}>", V::codec_name()))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        self.value.encode(out);
    }
    fn ttl_timestamp(&self) -> Option<u64> {
        Some(self.timestamp)
    }
    fn decode_from(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(TtlValue {
            timestamp: u64::decode_from(input)?,
            value: V::decode_from(input)?,
        })
    }
}

/// The timestamp at the start of an encoded [`TtlValue`], if the bytes hold one.
pub(crate) fn encoded_timestamp(bytes: &[u8]) -> Option<u64> {
    let ts: [u8; TTL_TIMESTAMP_LEN] = bytes.get(..TTL_TIMESTAMP_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(ts))
}

/// The TTL of state `id` of `backend` and the time by its clock, if the state has a TTL; an
/// access to a state with a TTL also takes one step of the backend's background cleanup
/// (R70).
pub(crate) fn ttl_now<K: Key, B: KeyedStateBackend<K> + ?Sized>(
    backend: &mut B,
    id: StateId,
) -> Result<Option<TtlNow>> {
    let Some(config) = backend.state_ttl(id) else {
        return Ok(None);
    };
    let now = backend.clock().now_millis();
    backend.ttl_cleanup_step(id, now)?;
    Ok(Some(TtlNow { config, now }))
}

/// How much of a stored state has expired (for the heap backend's cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing (or the state has no timestamps).
    Nothing,
    /// Some list elements or map entries.
    Part,
    /// All of it.
    All,
}

impl Expiry {
    /// The expiry of a collection of `total` timestamped parts of which `expired` expired.
    pub(crate) fn of_counts(expired: usize, total: usize) -> Expiry {
        match expired {
            0 => Expiry::Nothing,
            n if n == total => Expiry::All,
            _ => Expiry::Part,
        }
    }

    /// The expiry of one value.
    pub(crate) fn of_value<V: Codec>(value: &V, ttl: &TtlConfig, now: u64) -> Expiry {
        match value.ttl_timestamp() {
            Some(ts) if ttl.is_expired(ts, now) => Expiry::All,
            _ => Expiry::Nothing,
        }
    }
}

/// What a TTL state's backend knows at an access: the state's TTL and the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TtlNow {
    pub(crate) config: TtlConfig,
    pub(crate) now: u64,
}

impl TtlNow {
    pub(crate) fn expired<V>(&self, v: &TtlValue<V>) -> bool {
        self.config.is_expired(v.timestamp, self.now)
    }
}

thread_local! {
    /// The time of the access in progress on this thread, if an accessor pinned it: the reduce
    /// and aggregate wrappers judge expiry by it, so that one access reads the clock once (R61).
    static PINNED_NOW: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Pins the time of an access for the TTL wrappers that run inside it (user functions run on
/// the task thread, inside the call: R52); restored when dropped.
pub(crate) struct PinNow(Option<u64>);

impl PinNow {
    pub(crate) fn new(now: u64) -> PinNow {
        PinNow(PINNED_NOW.with(|p| p.replace(Some(now))))
    }
}

impl Drop for PinNow {
    fn drop(&mut self) {
        PINNED_NOW.with(|p| p.set(self.0));
    }
}

/// The pinned time of the access in progress, or the clock's.
fn now_of(clock: &dyn Clock) -> u64 {
    PINNED_NOW
        .with(std::cell::Cell::get)
        .unwrap_or_else(|| clock.now_millis())
}

/// The reduce function of a reducing state with a TTL: expired operands take no part (an
/// expired current value is replaced by the added one); the result is stamped now.
pub(crate) fn ttl_reducer<V: Clone + Send + Sync + 'static>(
    reduce: Reducer<V>,
    clock: Arc<dyn Clock>,
    config: TtlConfig,
) -> Reducer<TtlValue<V>> {
    Arc::new(move |a: &TtlValue<V>, b: &TtlValue<V>| {
        let now = now_of(&*clock);
        let a_live = !config.is_expired(a.timestamp, now);
        let b_live = !config.is_expired(b.timestamp, now);
        match (a_live, b_live) {
            (true, true) => TtlValue::new(reduce(&a.value, &b.value), now),
            (true, false) => a.clone(),
            // Only `b` is live, or neither is (the result stays expired).
            (false, _) => b.clone(),
        }
    })
}

/// The input of an aggregating state with a TTL: a value to add, or a touch that only
/// refreshes the accumulator's timestamp (a read under [`TtlUpdate::OnReadAndWrite`]).
#[derive(Debug, Clone)]
pub enum TtlAggregateInput<In> {
    /// Adds the value.
    Add(In),
    /// Refreshes the timestamp.
    Touch,
}

/// The aggregate function of an aggregating state with a TTL: the accumulator is a
/// [`TtlValue`]; an expired accumulator is replaced by a new one before an add, takes no part in
/// a merge, and yields no result.
pub struct TtlAggregate<F> {
    inner: Arc<F>,
    clock: Arc<dyn Clock>,
    config: TtlConfig,
}

impl<F> TtlAggregate<F> {
    pub(crate) fn new(inner: Arc<F>, clock: Arc<dyn Clock>, config: TtlConfig) -> Self {
        TtlAggregate {
            inner,
            clock,
            config,
        }
    }
}

impl<F: AggregateFunction> AggregateFunction for TtlAggregate<F> {
    type In = TtlAggregateInput<F::In>;
    type Acc = TtlValue<F::Acc>;
    type Out = TtlAggregateResult<F::Out>;
    fn create_accumulator(&self) -> TtlValue<F::Acc> {
        TtlValue::new(self.inner.create_accumulator(), now_of(&*self.clock))
    }
    fn add(&self, acc: &mut TtlValue<F::Acc>, input: TtlAggregateInput<F::In>) {
        let now = now_of(&*self.clock);
        if let TtlAggregateInput::Add(value) = input {
            if self.config.is_expired(acc.timestamp, now) {
                acc.value = self.inner.create_accumulator();
            }
            self.inner.add(&mut acc.value, value);
        }
        acc.timestamp = now;
    }
    fn get_result(&self, acc: &TtlValue<F::Acc>) -> TtlAggregateResult<F::Out> {
        TtlAggregateResult {
            timestamp: acc.timestamp,
            result: self.inner.get_result(&acc.value),
        }
    }
    fn merge(&self, acc: &mut TtlValue<F::Acc>, other: TtlValue<F::Acc>) {
        let now = now_of(&*self.clock);
        let acc_live = !self.config.is_expired(acc.timestamp, now);
        let other_live = !self.config.is_expired(other.timestamp, now);
        match (acc_live, other_live) {
            (true, true) => {
                self.inner.merge(&mut acc.value, other.value);
                acc.timestamp = now;
            }
            (true, false) => {}
            (false, _) => *acc = other,
        }
    }
}

/// The result of an aggregating state with a TTL, with the accumulator's timestamp so that the
/// accessor can tell an expired one.
#[derive(Debug, Clone)]
pub struct TtlAggregateResult<Out> {
    /// The accumulator's timestamp.
    pub timestamp: u64,
    /// The inner function's result.
    pub result: Out,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::codec::to_bytes;

    #[test]
    fn ttl_values_encode_the_timestamp_first() {
        let v = TtlValue::new(7u32, 0x0102);
        let bytes = to_bytes(&v);
        assert_eq!(bytes, [2, 1, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(TtlValue::<u32>::decode(&bytes).unwrap(), v);
        assert_eq!(encoded_timestamp(&bytes), Some(0x0102));
        assert_eq!(encoded_timestamp(&bytes[..7]), None);
        assert_eq!(TtlValue::<Vec<String>>::codec_name(), "ttl<vec<string>>");
    }

    #[test]
    fn expiry_is_at_timestamp_plus_ttl() {
        let c = TtlConfig::after(Duration::from_millis(10));
        assert!(!c.is_expired(100, 109));
        assert!(c.is_expired(100, 110));
        assert!(
            !c.is_expired(200, 110),
            "a timestamp in the future is fresh"
        );
        assert!(!TtlConfig::after(Duration::MAX).is_expired(5, u64::MAX - 1));
        assert!(TtlConfig::after(Duration::ZERO).validate("s").is_err());
    }

    #[test]
    fn the_reducer_leaves_expired_operands_out() {
        let clock = Arc::new(ManualClock::new(100));
        let r = ttl_reducer::<i64>(
            Arc::new(|a, b| a + b),
            clock.clone(),
            TtlConfig::after(Duration::from_millis(10)),
        );
        let live = TtlValue::new(1, 95);
        let old = TtlValue::new(40, 80);
        assert_eq!(r(&live, &TtlValue::new(2, 100)), TtlValue::new(3, 100));
        assert_eq!(r(&old, &TtlValue::new(2, 100)), TtlValue::new(2, 100));
        assert_eq!(r(&live, &old), live);
        assert_eq!(r(&old, &TtlValue::new(9, 70)).value, 9);
    }
}
