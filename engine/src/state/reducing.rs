//! Reducing state: a value per key and namespace, folded with a reduce function on `add`.

use std::marker::PhantomData;
use std::sync::Arc;

use super::ttl::{ttl_now, ttl_reducer, PinNow, TtlConfig, TtlValue};
use super::{
    handle_boilerplate, sealed, CodecInfo, Key, MergingState, Namespace, NsSlot, StateDescriptor,
    StateHandle, StateId, StateKind, StateMeta, StateValue,
};
use crate::codec::to_bytes;
use crate::error::Result;
use crate::snapshot::EncodedState;
use crate::KeyedStateBackend;

/// A reduce function, shared by every access to the state.
pub(crate) type Reducer<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

/// Describes a reducing state: its name, reduce function, value type `V` and namespace `N`.
pub struct ReducingStateDescriptor<V, N = ()> {
    name: String,
    reduce: Reducer<V>,
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> N>,
}

impl<V: StateValue> ReducingStateDescriptor<V, ()> {
    /// A reducing state named `name` that folds added values with `reduce(current, added)`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            reduce: Arc::new(reduce),
            ttl: None,
            _types: PhantomData,
        }
    }
}

impl<V: StateValue, N: Namespace> ReducingStateDescriptor<V, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> ReducingStateDescriptor<V, N2> {
        ReducingStateDescriptor {
            name: self.name,
            reduce: self.reduce,
            ttl: self.ttl,
            _types: PhantomData,
        }
    }

    /// The same state with a time-to-live (R60–R71): an expired value takes no part in a
    /// reduce.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The reduce function.
    pub(crate) fn reducer(&self) -> &Reducer<V> {
        &self.reduce
    }
}

impl<V: StateValue, N: Namespace> StateDescriptor for ReducingStateDescriptor<V, N> {
    type Handle = ReducingState<V, N>;
    fn name(&self) -> &str {
        &self.name
    }
    fn register_in<K: Key, B: KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle> {
        let Some(ttl) = self.ttl else {
            return backend.register_reducing(&self);
        };
        ttl.validate(&self.name)?;
        let reduce = ttl_reducer(self.reduce, backend.clock().clone(), ttl);
        let raw = backend.register_reducing(&ReducingStateDescriptor::<TtlValue<V>, N> {
            reduce: reduce.clone(),
            name: self.name,
            ttl: None,
            _types: PhantomData,
        })?;
        // Registered again: the function judges expiry by this TTL, not the first one's.
        backend.set_state_extra(raw, reduce)?;
        backend.set_state_ttl(raw.id(), ttl)?;
        Ok(ReducingState::from_id(raw.id()))
    }
}

/// A registered reducing state. Cheap to copy; valid for the backend that issued it.
pub struct ReducingState<V, N = ()> {
    id: StateId,
    _types: PhantomData<fn() -> (V, N)>,
}
handle_boilerplate!(ReducingState<V, N>);

impl<V, N> sealed::Sealed for ReducingState<V, N> {}

impl<V: StateValue, N: Namespace> StateHandle for ReducingState<V, N> {
    type Namespace = N;
    type Stored = V;
    type Extra = Reducer<V>;
    type Ttl = ReducingState<TtlValue<V>, N>;
    const KIND: StateKind = StateKind::Reducing;
    fn id(&self) -> StateId {
        self.id
    }
    fn from_id(id: StateId) -> Self {
        ReducingState {
            id,
            _types: PhantomData,
        }
    }
    fn meta(name: &str) -> StateMeta {
        StateMeta {
            name: name.to_owned(),
            kind: StateKind::Reducing,
            namespace: CodecInfo::of::<N>(),
            value: CodecInfo::of::<V>(),
            user_key: None,
        }
    }
    fn encode_stored(stored: &V) -> EncodedState {
        EncodedState::Value(to_bytes(stored))
    }
    fn encode_stored_run(
        stored: &V,
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
    fn decode_stored(encoded: &EncodedState) -> Result<V, crate::codec::CodecError> {
        match encoded {
            EncodedState::Value(bytes) => V::decode(bytes),
            _ => Err(super::wrong_shape("reducing value")),
        }
    }
    fn stored_expiry(stored: &V, ttl: &TtlConfig, now: u64) -> super::ttl::Expiry {
        super::ttl::Expiry::of_value(stored, ttl, now)
    }
}

impl<V: StateValue, N: Namespace> MergingState for ReducingState<V, N> {
    type TtlMerging = ReducingState<TtlValue<V>, N>;
    fn merge_stored(reduce: &Reducer<V>, target: &mut V, source: V) {
        *target = reduce(target, &source);
    }
}

/// Access to a reducing state for the current key, returned by `backend.reducing(&handle)`.
pub struct ReducingAccess<'a, K, B: ?Sized, V, N> {
    backend: &'a mut B,
    state: ReducingState<V, N>,
    ns: NsSlot<'a, N>,
    _key: PhantomData<fn() -> K>,
}

impl<'a, K: Key, B: KeyedStateBackend<K> + ?Sized, V: StateValue, N: Namespace>
    ReducingAccess<'a, K, B, V, N>
{
    pub(crate) fn new(backend: &'a mut B, state: ReducingState<V, N>) -> Self {
        ReducingAccess {
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

    /// The reduced value, or `None` if nothing was added since the last clear (with a TTL:
    /// or if it expired, R63).
    pub fn get(&mut self) -> Result<Option<V>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.reducing_get(self.state, ns);
        };
        let raw = <ReducingState<V, N> as StateHandle>::Ttl::from_id(self.state.id);
        let Some(stored) = self.backend.reducing_get(raw, ns)? else {
            return Ok(None);
        };
        if t.expired(&stored) {
            self.backend.clear(raw, ns)?;
            return Ok(t.config.returns_expired().then_some(stored.value));
        }
        if t.config.refresh_on_read() {
            // There is no primitive to set a reduced value: clear, then add to nothing.
            let _pin = PinNow::new(t.now);
            self.backend.clear(raw, ns)?;
            let refreshed = TtlValue::new(stored.value.clone(), t.now);
            self.backend.reducing_add(raw, ns, refreshed)?;
        }
        Ok(Some(stored.value))
    }

    /// Folds `value` into the state: `reduce(current, value)`, or `value` if there is none
    /// (with a TTL: or if the current value expired).
    pub fn add(&mut self, value: V) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.reducing_add(self.state, ns, value);
        };
        let raw = <ReducingState<V, N> as StateHandle>::Ttl::from_id(self.state.id);
        let _pin = PinNow::new(t.now);
        self.backend
            .reducing_add(raw, ns, TtlValue::new(value, t.now))
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }

    /// Reduces the values of the `sources` namespaces into the `target` namespace and removes
    /// the sources.
    pub fn merge_namespaces(&mut self, target: &N, sources: &[N]) -> Result<()> {
        let _pin = ttl_now(&mut *self.backend, self.state.id)?.map(|t| PinNow::new(t.now));
        self.backend.merge_namespaces(self.state, target, sources)
    }
}
