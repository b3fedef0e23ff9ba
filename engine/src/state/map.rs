//! Map state: a map from user keys to values per key and namespace.

use std::marker::PhantomData;

use super::{
    handle_boilerplate, sealed, CodecInfo, Key, Namespace, NsSlot, StateDescriptor, StateHandle,
    StateId, StateKind, StateMeta, StateValue,
};
use crate::codec::to_bytes;
use crate::error::{Error, Result};
use crate::snapshot::EncodedState;
use crate::KeyedStateBackend;

/// How the heap backend stores one map state's entries: a hash map with a fixed-seed hasher, so
/// that iteration order is the same in every run (it is still unspecified).
pub type MapStore<UK, UV> = hashbrown::HashMap<UK, UV, foldhash::fast::FixedState>;

/// The types a map descriptor or handle carries without owning values of them.
type MapTypes<UK, UV, N> = fn() -> (UK, UV, N);

/// Describes a map state: its name, user key type `UK`, value type `UV` and namespace `N`.
pub struct MapStateDescriptor<UK, UV, N = ()> {
    name: String,
    _types: PhantomData<MapTypes<UK, UV, N>>,
}

impl<UK: Key, UV: StateValue> MapStateDescriptor<UK, UV, ()> {
    /// A map state named `name`, without a namespace.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            _types: PhantomData,
        }
    }
}

impl<UK: Key, UV: StateValue, N: Namespace> MapStateDescriptor<UK, UV, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> MapStateDescriptor<UK, UV, N2> {
        MapStateDescriptor {
            name: self.name,
            _types: PhantomData,
        }
    }
}

impl<UK: Key, UV: StateValue, N: Namespace> StateDescriptor for MapStateDescriptor<UK, UV, N> {
    type Handle = MapState<UK, UV, N>;
    fn name(&self) -> &str {
        &self.name
    }
    fn register_in<K: Key, B: KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle> {
        backend.register_map(&self)
    }
}

/// A registered map state. Cheap to copy; valid for the backend that issued it.
pub struct MapState<UK, UV, N = ()> {
    id: StateId,
    _types: PhantomData<MapTypes<UK, UV, N>>,
}
handle_boilerplate!(MapState<UK, UV, N>);

impl<UK, UV, N> sealed::Sealed for MapState<UK, UV, N> {}

impl<UK: Key, UV: StateValue, N: Namespace> StateHandle for MapState<UK, UV, N> {
    type Namespace = N;
    type Stored = MapStore<UK, UV>;
    type Extra = ();
    const KIND: StateKind = StateKind::Map;
    fn id(&self) -> StateId {
        self.id
    }
    fn from_id(id: StateId) -> Self {
        MapState {
            id,
            _types: PhantomData,
        }
    }
    fn meta(name: &str) -> StateMeta {
        StateMeta {
            name: name.to_owned(),
            kind: StateKind::Map,
            namespace: CodecInfo::of::<N>(),
            value: CodecInfo::of::<UV>(),
            user_key: Some(CodecInfo::of::<UK>()),
        }
    }
    fn encode_stored(stored: &Self::Stored) -> EncodedState {
        // The canonical form orders entries by the bytes of the user key.
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = stored
            .iter()
            .map(|(k, v)| (to_bytes(k), to_bytes(v)))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        EncodedState::Map(entries)
    }
    fn decode_stored(encoded: &EncodedState) -> Result<Self::Stored, crate::codec::CodecError> {
        match encoded {
            EncodedState::Map(entries) => {
                let mut map = MapStore::with_capacity_and_hasher(
                    entries.len(),
                    foldhash::fast::FixedState::default(),
                );
                for (k, v) in entries {
                    map.insert(UK::decode(k)?, UV::decode(v)?);
                }
                Ok(map)
            }
            _ => Err(super::wrong_shape("map")),
        }
    }
}

/// Access to a map state for the current key, returned by `backend.map(&handle)`.
pub struct MapAccess<'a, K, B: ?Sized, UK, UV, N> {
    backend: &'a mut B,
    state: MapState<UK, UV, N>,
    ns: NsSlot<'a, N>,
    _key: PhantomData<fn() -> K>,
}

impl<'a, K: Key, B: KeyedStateBackend<K> + ?Sized, UK: Key, UV: StateValue, N: Namespace>
    MapAccess<'a, K, B, UK, UV, N>
{
    pub(crate) fn new(backend: &'a mut B, state: MapState<UK, UV, N>) -> Self {
        MapAccess {
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

    /// The value of `user_key`, if present.
    pub fn get(&self, user_key: &UK) -> Result<Option<UV>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_get(self.state, ns, user_key)
    }

    /// Whether `user_key` is present.
    pub fn contains(&self, user_key: &UK) -> Result<bool> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_contains(self.state, ns, user_key)
    }

    /// Sets the value of `user_key`.
    pub fn put(&mut self, user_key: UK, value: UV) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_put(self.state, ns, user_key, value)
    }

    /// Sets every entry of `entries`; a later entry wins over an earlier one with the same key.
    pub fn put_all(&mut self, entries: impl IntoIterator<Item = (UK, UV)>) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let entries: Vec<(UK, UV)> = entries.into_iter().collect();
        self.backend.map_put_all(self.state, ns, entries)
    }

    /// Removes `user_key`; removing an absent key does nothing.
    pub fn remove(&mut self, user_key: &UK) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_remove(self.state, ns, user_key)
    }

    /// Every entry, in an unspecified order.
    pub fn entries(&self) -> Result<Vec<(UK, UV)>> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_entries(self.state, ns)
    }

    /// Every user key, in an unspecified order.
    pub fn keys(&self) -> Result<Vec<UK>> {
        Ok(self.entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every value, in an unspecified order.
    pub fn values(&self) -> Result<Vec<UV>> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> Result<bool> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_is_empty(self.state, ns)
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> Result<()> {
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.clear(self.state, ns)
    }

    /// An iterator over the entries that can remove the entry it last returned
    /// ([`MapCursor::remove_current`]). The entries are those present when it was created.
    pub fn iter(self) -> Result<MapCursor<'a, K, B, UK, UV, N>> {
        let entries = self.entries()?.into_iter();
        Ok(MapCursor {
            access: self,
            entries,
            current: None,
        })
    }
}

/// An iterator over a map state's entries that can remove the current entry.
///
/// ```
/// # use flowstate::*;
/// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
/// let attrs = backend.register(MapStateDescriptor::<String, i64>::new("attrs"))?;
/// backend.set_current_key(&1);
/// backend.map(&attrs).put("a".into(), 1)?;
/// backend.map(&attrs).put("b".into(), -1)?;
/// let mut cursor = backend.map(&attrs).iter()?;
/// while let Some(entry) = cursor.next() {
///     let (_, v) = entry?;
///     if v < 0 {
///         cursor.remove_current()?;
///     }
/// }
/// assert_eq!(backend.map(&attrs).keys()?, vec!["a".to_string()]);
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct MapCursor<'a, K, B: ?Sized, UK, UV, N> {
    access: MapAccess<'a, K, B, UK, UV, N>,
    entries: std::vec::IntoIter<(UK, UV)>,
    current: Option<UK>,
}

impl<K: Key, B: KeyedStateBackend<K> + ?Sized, UK: Key, UV: StateValue, N: Namespace>
    MapCursor<'_, K, B, UK, UV, N>
{
    /// Removes from the state the entry the iterator returned last. Calling it twice without
    /// a `next()` in between, or before the first `next()`, is an error.
    pub fn remove_current(&mut self) -> Result<()> {
        match self.current.take() {
            Some(key) => self.access.remove(&key),
            None => Err(Error::InvalidArgument(
                "remove_current called without a current entry (call next() first)".into(),
            )),
        }
    }

    /// Sets the value of the entry the iterator returned last (it writes through to the state).
    pub fn set_current_value(&mut self, value: UV) -> Result<()> {
        match &self.current {
            Some(key) => self.access.put(key.clone(), value),
            None => Err(Error::InvalidArgument(
                "set_current_value called without a current entry (call next() first)".into(),
            )),
        }
    }
}

impl<K: Key, B: KeyedStateBackend<K> + ?Sized, UK: Key, UV: StateValue, N: Namespace> Iterator
    for MapCursor<'_, K, B, UK, UV, N>
{
    type Item = Result<(UK, UV)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = self.entries.next()?;
        self.current = Some(k.clone());
        Some(Ok((k, v)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}
