//! List state: an ordered list of elements per key and namespace.

use std::marker::PhantomData;

use super::ttl::{ttl_now, TtlConfig, TtlValue};
use super::{
    handle_boilerplate, sealed, CodecInfo, Key, MergingState, Namespace, NsSlot, StateDescriptor,
    StateHandle, StateId, StateKind, StateMeta, StateValue,
};
use crate::codec::to_bytes;
use crate::error::Result;
use crate::snapshot::EncodedState;
use crate::KeyedStateBackend;

/// Describes a list state: its name, element type `T` and namespace type `N`.
pub struct ListStateDescriptor<T, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> (T, N)>,
}

impl<T: StateValue> ListStateDescriptor<T, ()> {
    /// A list state named `name`, without a namespace.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

impl<T: StateValue, N: Namespace> ListStateDescriptor<T, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> ListStateDescriptor<T, N2> {
        ListStateDescriptor {
            name: self.name,
            ttl: self.ttl,
            _types: PhantomData,
        }
    }

    /// The same state with a time-to-live: each element expires on its own (R60–R71).
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<T: StateValue, N: Namespace> StateDescriptor for ListStateDescriptor<T, N> {
    type Handle = ListState<T, N>;
    fn name(&self) -> &str {
        &self.name
    }
    fn register_in<K: Key, B: KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle> {
        let Some(ttl) = self.ttl else {
            return backend.register_list(&self);
        };
        ttl.validate(&self.name)?;
        let raw = backend.register_list(&ListStateDescriptor::<TtlValue<T>, N> {
            name: self.name,
            ttl: None,
            _types: PhantomData,
        })?;
        backend.set_state_ttl(raw.id(), ttl)?;
        Ok(ListState::from_id(raw.id()))
    }
}

/// A registered list state. Cheap to copy; valid for the backend that issued it.
pub struct ListState<T, N = ()> {
    id: StateId,
    _types: PhantomData<fn() -> (T, N)>,
}
handle_boilerplate!(ListState<T, N>);

impl<T, N> sealed::Sealed for ListState<T, N> {}

impl<T: StateValue, N: Namespace> StateHandle for ListState<T, N> {
    type Namespace = N;
    type Stored = Vec<T>;
    type Extra = ();
    type Ttl = ListState<TtlValue<T>, N>;
    const KIND: StateKind = StateKind::List;
    fn id(&self) -> StateId {
        self.id
    }
    fn from_id(id: StateId) -> Self {
        ListState {
            id,
            _types: PhantomData,
        }
    }
    fn meta(name: &str) -> StateMeta {
        StateMeta {
            name: name.to_owned(),
            kind: StateKind::List,
            namespace: CodecInfo::of::<N>(),
            value: CodecInfo::of::<T>(),
            user_key: None,
        }
    }
    fn encode_stored(stored: &Vec<T>) -> EncodedState {
        EncodedState::List(stored.iter().map(to_bytes).collect())
    }
    fn decode_stored(encoded: &EncodedState) -> Result<Vec<T>, crate::codec::CodecError> {
        match encoded {
            EncodedState::List(elements) => elements.iter().map(|e| T::decode(e)).collect(),
            _ => Err(super::wrong_shape("list")),
        }
    }
    fn stored_expiry(stored: &Vec<T>, ttl: &TtlConfig, now: u64) -> super::ttl::Expiry {
        // Elements are appended with non-decreasing timestamps, so the first is the oldest: if
        // it lives, nothing is counted (O(1) per list in the heap backend's cleanup). A list
        // out of order (after a namespace merge) may then keep an expired element until a
        // read, a snapshot or a compaction trims it (R64, R65, R70).
        let expired_at = |e: &T| e.ttl_timestamp().is_some_and(|ts| ttl.is_expired(ts, now));
        match stored.first() {
            Some(first) if expired_at(first) => {
                let expired = stored.iter().filter(|e| expired_at(e)).count();
                super::ttl::Expiry::of_counts(expired, stored.len())
            }
            _ => super::ttl::Expiry::Nothing,
        }
    }
}

impl<T: StateValue, N: Namespace> MergingState for ListState<T, N> {
    type TtlMerging = ListState<TtlValue<T>, N>;
    fn merge_stored(_extra: &(), target: &mut Vec<T>, mut source: Vec<T>) {
        target.append(&mut source);
    }
}

/// Access to a list state for the current key, returned by `backend.list(&handle)`.
pub struct ListAccess<'a, K, B: ?Sized, T, N> {
    backend: &'a mut B,
    state: ListState<T, N>,
    ns: NsSlot<'a, N>,
    _key: PhantomData<fn() -> K>,
}

impl<'a, K: Key, B: KeyedStateBackend<K> + ?Sized, T: StateValue, N: Namespace>
    ListAccess<'a, K, B, T, N>
{
    pub(crate) fn new(backend: &'a mut B, state: ListState<T, N>) -> Self {
        ListAccess {
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

    /// The elements, in the order they were added; empty if there are none. With a TTL,
    /// expired elements are left out (R63) and removed (R64).
    pub fn get(&mut self) -> Result<Vec<T>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.list_get(self.state, ns);
        };
        let raw = <ListState<T, N> as StateHandle>::Ttl::from_id(self.state.id);
        let stored = self.backend.list_get(raw, ns)?;
        let any_expired = stored.iter().any(|e| t.expired(e));
        let refresh = t.config.refresh_on_read() && !stored.is_empty();
        if !any_expired && !refresh {
            // The common case: nothing to clean up or restamp, the values move out.
            return Ok(stored.into_iter().map(|e| e.value).collect());
        }
        let mut result = Vec::with_capacity(stored.len());
        let mut kept = Vec::new();
        for e in stored {
            let expired = t.expired(&e);
            if !expired || t.config.returns_expired() {
                result.push(e.value.clone());
            }
            if !expired && (any_expired || refresh) {
                let timestamp = if refresh { t.now } else { e.timestamp };
                kept.push(TtlValue::new(e.value, timestamp));
            }
        }
        if any_expired || refresh {
            self.backend.list_update(raw, ns, kept)?;
        }
        Ok(result)
    }

    /// Calls `read` with the elements, in the order they were added (empty if there are
    /// none), and returns what it returns: [`get`](Self::get) without building a new vector.
    /// The heap backend lends the list it stores; the LSM backend lends the list it decoded.
    /// With a TTL it reads as `get` does.
    ///
    /// ```
    /// # use flowstate::*;
    /// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    /// let amounts = backend.register(ListStateDescriptor::<u64>::new("amounts"))?;
    /// backend.set_current_key(&7);
    /// backend.list(&amounts).add_all(vec![3, 4, 5])?;
    /// let total: u64 = backend.list(&amounts).read(|items| items.iter().sum())?;
    /// assert_eq!(total, 12);
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn read<R>(&mut self, read: impl FnOnce(&[T]) -> R) -> Result<R> {
        if self.backend.state_ttl(self.state.id).is_some() {
            return Ok(read(&self.get()?));
        }
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.list_visit(self.state, ns, read)
    }

    /// Appends one element.
    pub fn add(&mut self, element: T) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.list_add(self.state, ns, element);
        };
        let raw = <ListState<T, N> as StateHandle>::Ttl::from_id(self.state.id);
        self.backend
            .list_add(raw, ns, TtlValue::new(element, t.now))
    }

    /// Appends every element of `elements`, in order. Adding nothing changes nothing.
    pub fn add_all(&mut self, elements: Vec<T>) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.list_add_all(self.state, ns, elements);
        };
        let raw = <ListState<T, N> as StateHandle>::Ttl::from_id(self.state.id);
        let stamped = elements
            .into_iter()
            .map(|e| TtlValue::new(e, t.now))
            .collect();
        self.backend.list_add_all(raw, ns, stamped)
    }

    /// Replaces the list with `elements`; an empty vector clears it.
    pub fn update(&mut self, elements: Vec<T>) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return self.backend.list_update(self.state, ns, elements);
        };
        let raw = <ListState<T, N> as StateHandle>::Ttl::from_id(self.state.id);
        let stamped = elements
            .into_iter()
            .map(|e| TtlValue::new(e, t.now))
            .collect();
        self.backend.list_update(raw, ns, stamped)
    }

    /// Removes the list.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }

    /// Merges the lists of the `sources` namespaces into the `target` namespace (appending in
    /// the order of `sources`) and removes the sources.
    pub fn merge_namespaces(&mut self, target: &N, sources: &[N]) -> Result<()> {
        self.backend.merge_namespaces(self.state, target, sources)
    }
}
