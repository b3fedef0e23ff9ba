//! Value state: one value per key and namespace.

use std::marker::PhantomData;

use super::ttl::{ttl_now, TtlConfig, TtlValue};
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
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> (V, N)>,
}

impl<V: StateValue> ValueStateDescriptor<V, ()> {
    /// A value state named `name`, without a namespace.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

impl<V: StateValue, N: Namespace> ValueStateDescriptor<V, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> ValueStateDescriptor<V, N2> {
        ValueStateDescriptor {
            name: self.name,
            ttl: self.ttl,
            _types: PhantomData,
        }
    }

    /// The same state with a time-to-live (spec/state-semantics.md R60–R71).
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
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
        let Some(ttl) = self.ttl else {
            return backend.register_value(&self);
        };
        ttl.validate(&self.name)?;
        let raw = backend.register_value(&ValueStateDescriptor::<TtlValue<V>, N> {
            name: self.name,
            ttl: None,
            _types: PhantomData,
        })?;
        backend.set_state_ttl(raw.id(), ttl)?;
        Ok(ValueState::from_id(raw.id()))
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
    type Ttl = ValueState<TtlValue<V>, N>;
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
    fn stored_expiry(stored: &V, ttl: &TtlConfig, now: u64) -> super::ttl::Expiry {
        super::ttl::Expiry::of_value(stored, ttl, now)
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

    /// The value, or `None` if there is none (or, with a TTL, if it expired: R63).
    pub fn get(&mut self) -> Result<Option<V>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.value_get(self.state, ns);
        };
        let raw = <ValueState<V, N> as StateHandle>::Ttl::from_id(self.state.id);
        let Some(stored) = self.backend.value_get(raw, ns)? else {
            return Ok(None);
        };
        if t.expired(&stored) {
            self.backend.clear(raw, ns)?;
            return Ok(t.config.returns_expired().then_some(stored.value));
        }
        if t.config.refresh_on_read() {
            let refreshed = TtlValue::new(stored.value.clone(), t.now);
            self.backend.value_update(raw, ns, refreshed)?;
        }
        Ok(Some(stored.value))
    }

    /// Calls `read` with the value (`None` if there is none) and returns what it returns:
    /// [`get`](Self::get) without the copy. The heap backend lends the value it stores, so
    /// reading a large value or a field of it allocates nothing; the LSM backend lends the
    /// value it decoded. With a TTL it reads as `get` does (expired values are removed, R64).
    ///
    /// ```
    /// # use flowstate::*;
    /// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    /// let names = backend.register(ValueStateDescriptor::<String>::new("name"))?;
    /// backend.set_current_key(&7);
    /// backend.value(&names).update("a long name".into())?;
    /// let len = backend.value(&names).read(|name| name.map_or(0, String::len))?;
    /// assert_eq!(len, 11);
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn read<R>(&mut self, read: impl FnOnce(Option<&V>) -> R) -> Result<R> {
        if self.backend.state_ttl(self.state.id).is_some() {
            return Ok(read(self.get()?.as_ref()));
        }
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.value_visit(self.state, ns, read)
    }

    /// Sets the value.
    pub fn update(&mut self, value: V) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.value_update(self.state, ns, value);
        };
        let raw = <ValueState<V, N> as StateHandle>::Ttl::from_id(self.state.id);
        self.backend
            .value_update(raw, ns, TtlValue::new(value, t.now))
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }
}
