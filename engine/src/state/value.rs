//! Value state: one value per key and namespace.

use std::marker::PhantomData;

use super::{
    handle_boilerplate, sealed, CodecInfo, Key, Namespace, NsSlot, StateDescriptor, StateHandle,
    StateId, StateKind, StateMeta, StateValue,
};
use crate::codec::to_bytes;
use crate::error::Result;
use crate::snapshot::EncodedState;
use crate::KeyedStateBackend;

/// Describes a value state: its name, value type `V` and namespace type `N`.
pub struct ValueStateDescriptor<V, N = ()> {
    name: String,
    _types: PhantomData<fn() -> (V, N)>,
}

impl<V: StateValue> ValueStateDescriptor<V, ()> {
    /// A value state named `name`, without a namespace.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            _types: PhantomData,
        }
    }
}

impl<V: StateValue, N: Namespace> ValueStateDescriptor<V, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> ValueStateDescriptor<V, N2> {
        ValueStateDescriptor {
            name: self.name,
            _types: PhantomData,
        }
    }
}

impl<V: StateValue, N: Namespace> StateDescriptor for ValueStateDescriptor<V, N> {
    type Handle = ValueState<V, N>;
    fn name(&self) -> &str {
        &self.name
    }
    fn register_in<K: Key, B: KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle> {
        backend.register_value(&self)
    }
}

/// A registered value state. Cheap to copy; valid for the backend that issued it.
pub struct ValueState<V, N = ()> {
    id: StateId,
    _types: PhantomData<fn() -> (V, N)>,
}
handle_boilerplate!(ValueState<V, N>);

impl<V, N> sealed::Sealed for ValueState<V, N> {}

impl<V: StateValue, N: Namespace> StateHandle for ValueState<V, N> {
    type Namespace = N;
    type Stored = V;
    type Extra = ();
    const KIND: StateKind = StateKind::Value;
    fn id(&self) -> StateId {
        self.id
    }
    fn from_id(id: StateId) -> Self {
        ValueState {
            id,
            _types: PhantomData,
        }
    }
    fn meta(name: &str) -> StateMeta {
        StateMeta {
            name: name.to_owned(),
            kind: StateKind::Value,
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
            _ => Err(super::wrong_shape("value")),
        }
    }
}

/// Access to a value state for the current key, returned by `backend.value(&handle)`.
pub struct ValueAccess<'a, K, B: ?Sized, V, N> {
    backend: &'a mut B,
    state: ValueState<V, N>,
    ns: NsSlot<'a, N>,
    _key: PhantomData<fn() -> K>,
}

impl<'a, K: Key, B: KeyedStateBackend<K> + ?Sized, V: StateValue, N: Namespace>
    ValueAccess<'a, K, B, V, N>
{
    pub(crate) fn new(backend: &'a mut B, state: ValueState<V, N>) -> Self {
        ValueAccess {
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

    /// The value, or `None` if there is none.
    pub fn get(&self) -> Result<Option<V>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.value_get(self.state, ns)
    }

    /// Sets the value.
    pub fn update(&mut self, value: V) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.value_update(self.state, ns, value)
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }
}
