//! Aggregating state: an accumulator per key and namespace, folded with an
//! [`AggregateFunction`].

use std::marker::PhantomData;
use std::sync::Arc;

use super::ttl::{ttl_now, PinNow, TtlAggregate, TtlAggregateInput, TtlConfig};
use super::{
    handle_boilerplate, sealed, CodecInfo, Key, MergingState, Namespace, NsSlot, StateDescriptor,
    StateHandle, StateId, StateKind, StateMeta, StateValue,
};
use crate::codec::to_bytes;
use crate::error::Result;
use crate::snapshot::EncodedState;
use crate::KeyedStateBackend;

/// An incremental aggregation: inputs are added to an accumulator, which yields a result.
///
/// ```
/// use flowstate::AggregateFunction;
/// /// The mean of the inputs.
/// struct Average;
/// impl AggregateFunction for Average {
///     type In = i64;
///     type Acc = (i64, u64);
///     type Out = f64;
///     fn create_accumulator(&self) -> (i64, u64) { (0, 0) }
///     fn add(&self, acc: &mut (i64, u64), value: i64) { acc.0 += value; acc.1 += 1; }
///     fn get_result(&self, acc: &(i64, u64)) -> f64 { acc.0 as f64 / acc.1.max(1) as f64 }
///     fn merge(&self, acc: &mut (i64, u64), other: (i64, u64)) { acc.0 += other.0; acc.1 += other.1; }
/// }
/// ```
pub trait AggregateFunction: Send + Sync + 'static {
    /// The type of the values added.
    type In;
    /// The accumulator, the part that is stored.
    type Acc: StateValue;
    /// The result type.
    type Out;
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds `value` to `acc`, in place.
    fn add(&self, acc: &mut Self::Acc, value: Self::In);
    /// The result of `acc`.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges `other` into `acc` (used when namespaces are merged).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
}

/// Describes an aggregating state: its name, aggregate function `F` and namespace `N`.
pub struct AggregatingStateDescriptor<F, N = ()> {
    name: String,
    function: Arc<F>,
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> N>,
}

impl<F: AggregateFunction> AggregatingStateDescriptor<F, ()> {
    /// An aggregating state named `name` that aggregates with `function`.
    pub fn new(name: impl Into<String>, function: F) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            function: Arc::new(function),
            ttl: None,
            _types: PhantomData,
        }
    }
}

impl<F: AggregateFunction, N: Namespace> AggregatingStateDescriptor<F, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> AggregatingStateDescriptor<F, N2> {
        AggregatingStateDescriptor {
            name: self.name,
            function: self.function,
            ttl: self.ttl,
            _types: PhantomData,
        }
    }

    /// The same state with a time-to-live (R60–R71): an expired accumulator is replaced by a
    /// new one on the next add.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The aggregate function.
    pub(crate) fn function(&self) -> &Arc<F> {
        &self.function
    }
}

impl<F: AggregateFunction, N: Namespace> StateDescriptor for AggregatingStateDescriptor<F, N> {
    type Handle = AggregatingState<F, N>;
    fn name(&self) -> &str {
        &self.name
    }
    fn register_in<K: Key, B: KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle> {
        let Some(ttl) = self.ttl else {
            return backend.register_aggregating(&self);
        };
        ttl.validate(&self.name)?;
        let function = Arc::new(TtlAggregate::new(
            self.function,
            backend.clock().clone(),
            ttl,
        ));
        let raw =
            backend.register_aggregating(&AggregatingStateDescriptor::<TtlAggregate<F>, N> {
                name: self.name,
                function: Arc::clone(&function),
                ttl: None,
                _types: PhantomData,
            })?;
        // Registered again: the function judges expiry by this TTL, not the first one's.
        backend.set_state_extra(raw, function)?;
        backend.set_state_ttl(raw.id(), ttl)?;
        Ok(AggregatingState::from_id(raw.id()))
    }
}

/// A registered aggregating state. Cheap to copy; valid for the backend that issued it.
pub struct AggregatingState<F, N = ()> {
    id: StateId,
    _types: PhantomData<fn() -> (F, N)>,
}
handle_boilerplate!(AggregatingState<F, N>);

impl<F, N> sealed::Sealed for AggregatingState<F, N> {}

impl<F: AggregateFunction, N: Namespace> StateHandle for AggregatingState<F, N> {
    type Namespace = N;
    type Stored = F::Acc;
    type Extra = Arc<F>;
    type Ttl = AggregatingState<TtlAggregate<F>, N>;
    const KIND: StateKind = StateKind::Aggregating;
    fn id(&self) -> StateId {
        self.id
    }
    fn from_id(id: StateId) -> Self {
        AggregatingState {
            id,
            _types: PhantomData,
        }
    }
    fn meta(name: &str) -> StateMeta {
        StateMeta {
            name: name.to_owned(),
            kind: StateKind::Aggregating,
            namespace: CodecInfo::of::<N>(),
            value: CodecInfo::of::<F::Acc>(),
            user_key: None,
        }
    }
    fn encode_stored(stored: &F::Acc) -> EncodedState {
        EncodedState::Value(to_bytes(stored))
    }
    fn encode_stored_run(
        stored: &F::Acc,
        run: &mut crate::snapshot::EncodedRun,
        key: impl FnOnce(&mut Vec<u8>),
        namespace: impl FnOnce(&mut Vec<u8>),
    ) {
        run.push_with(
            key,
            namespace,
            crate::snapshot::RunValueSource::Encode(&mut |b| {
                crate::codec::Codec::encode(stored, b)
            }),
        );
    }
    fn decode_stored(encoded: &EncodedState) -> Result<F::Acc, crate::codec::CodecError> {
        match encoded {
            EncodedState::Value(bytes) => <F::Acc as crate::codec::Codec>::decode(bytes),
            _ => Err(super::wrong_shape("accumulator")),
        }
    }
    fn stored_expiry(stored: &F::Acc, ttl: &TtlConfig, now: u64) -> super::ttl::Expiry {
        super::ttl::Expiry::of_value(stored, ttl, now)
    }
}

impl<F: AggregateFunction, N: Namespace> MergingState for AggregatingState<F, N> {
    type TtlMerging = AggregatingState<TtlAggregate<F>, N>;
    fn merge_stored(function: &Arc<F>, target: &mut F::Acc, source: F::Acc) {
        function.merge(target, source);
    }
}

/// Access to an aggregating state for the current key, returned by
/// `backend.aggregating(&handle)`.
pub struct AggregatingAccess<'a, K, B: ?Sized, F, N> {
    backend: &'a mut B,
    state: AggregatingState<F, N>,
    ns: NsSlot<'a, N>,
    _key: PhantomData<fn() -> K>,
}

impl<'a, K: Key, B: KeyedStateBackend<K> + ?Sized, F: AggregateFunction, N: Namespace>
    AggregatingAccess<'a, K, B, F, N>
{
    pub(crate) fn new(backend: &'a mut B, state: AggregatingState<F, N>) -> Self {
        AggregatingAccess {
            backend,
            state,
            ns: NsSlot::implicit(),
            _key: PhantomData,
        }
    }

    /// Narrows the access to namespace `ns`.
    pub fn namespace(mut self, ns: &'a N) -> Self {
        self.ns = NsSlot::Given(ns);
        self
    }

    /// The aggregate's result, or `None` if nothing was added since the last clear (with a
    /// TTL: or if the accumulator expired, R63).
    pub fn get(&mut self) -> Result<Option<F::Out>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.aggregating_get(self.state, ns);
        };
        let raw = <AggregatingState<F, N> as StateHandle>::Ttl::from_id(self.state.id);
        let Some(stored) = self.backend.aggregating_get(raw, ns)? else {
            return Ok(None);
        };
        if t.config.is_expired(stored.timestamp, t.now) {
            self.backend.clear(raw, ns)?;
            return Ok(t.config.returns_expired().then_some(stored.result));
        }
        if t.config.refresh_on_read() {
            let _pin = PinNow::new(t.now);
            self.backend
                .aggregating_add(raw, ns, TtlAggregateInput::Touch)?;
        }
        Ok(Some(stored.result))
    }

    /// Adds `value` to the accumulator (created first if there is none; with a TTL, also if
    /// it expired).
    pub fn add(&mut self, value: F::In) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.aggregating_add(self.state, ns, value);
        };
        let raw = <AggregatingState<F, N> as StateHandle>::Ttl::from_id(self.state.id);
        let _pin = PinNow::new(t.now);
        self.backend
            .aggregating_add(raw, ns, TtlAggregateInput::Add(value))
    }

    /// Removes the accumulator.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }

    /// Merges the accumulators of the `sources` namespaces into the `target` namespace and
    /// removes the sources.
    pub fn merge_namespaces(&mut self, target: &N, sources: &[N]) -> Result<()> {
        let _pin = ttl_now(&mut *self.backend, self.state.id)?.map(|t| PinNow::new(t.now));
        self.backend.merge_namespaces(self.state, target, sources)
    }
}
