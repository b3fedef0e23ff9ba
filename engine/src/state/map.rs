//! Map state: a map from user keys to values per key and namespace.

use std::marker::PhantomData;

use super::ttl::{ttl_now, TtlConfig, TtlNow, TtlValue};
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
    ttl: Option<TtlConfig>,
    _types: PhantomData<MapTypes<UK, UV, N>>,
}

impl<UK: Key, UV: StateValue> MapStateDescriptor<UK, UV, ()> {
    /// A map state named `name`, without a namespace.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

impl<UK: Key, UV: StateValue, N: Namespace> MapStateDescriptor<UK, UV, N> {
    /// The same state, kept per namespace `N2`.
    pub fn with_namespace<N2: Namespace>(self) -> MapStateDescriptor<UK, UV, N2> {
        MapStateDescriptor {
            name: self.name,
            ttl: self.ttl,
            _types: PhantomData,
        }
    }

    /// The same state with a time-to-live: each map entry expires on its own (R60–R71).
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
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
        let Some(ttl) = self.ttl else {
            return backend.register_map(&self);
        };
        ttl.validate(&self.name)?;
        let raw = backend.register_map(&MapStateDescriptor::<UK, TtlValue<UV>, N> {
            name: self.name,
            ttl: None,
            _types: PhantomData,
        })?;
        backend.set_state_ttl(raw.id(), ttl)?;
        Ok(MapState::from_id(raw.id()))
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
    type Ttl = MapState<UK, TtlValue<UV>, N>;
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
    fn stored_expiry(stored: &Self::Stored, ttl: &TtlConfig, now: u64) -> super::ttl::Expiry {
        let expired = stored
            .values()
            .filter(|v| v.ttl_timestamp().is_some_and(|ts| ttl.is_expired(ts, now)))
            .count();
        super::ttl::Expiry::of_counts(expired, stored.len())
    }
}

/// A map state's stored form under a TTL.
type TtlMapState<UK, UV, N> = MapState<UK, TtlValue<UV>, N>;

/// What a map access to a state with a TTL works with: the TTL and time, and the stored form.
type TtlAccess<UK, UV, N> = (TtlNow, TtlMapState<UK, UV, N>);

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

    /// The handle of the state as stored with a TTL, and the TTL and time, if it has one.
    fn ttl(&mut self) -> Result<Option<TtlAccess<UK, UV, N>>> {
        let Some(t) = ttl_now(&mut *self.backend, self.state.id)? else {
            return Ok(None);
        };
        Ok(Some((t, MapState::from_id(self.state.id))))
    }

    /// Whether the state has a TTL (no cleanup step taken).
    fn has_ttl(&self) -> bool {
        self.backend.state_ttl(self.state.id).is_some()
    }

    /// The value of `user_key`, if present (with a TTL: and not expired, R63).
    pub fn get(&mut self, user_key: &UK) -> Result<Option<UV>> {
        let ttl = self.ttl()?;
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some((t, raw)) = ttl else {
            return self.backend.map_get(self.state, ns, user_key);
        };
        let Some(stored) = self.backend.map_get(raw, ns, user_key)? else {
            return Ok(None);
        };
        if t.expired(&stored) {
            self.backend.map_remove(raw, ns, user_key)?;
            return Ok(t.config.returns_expired().then_some(stored.value));
        }
        if t.config.refresh_on_read() {
            let refreshed = TtlValue::new(stored.value.clone(), t.now);
            self.backend.map_put(raw, ns, user_key.clone(), refreshed)?;
        }
        Ok(Some(stored.value))
    }

    /// Calls `read` with the value of `user_key` (`None` if absent) and returns what it
    /// returns: [`get`](Self::get) without the copy. With a TTL it reads as `get` does.
    pub fn read<R>(&mut self, user_key: &UK, read: impl FnOnce(Option<&UV>) -> R) -> Result<R> {
        if self.has_ttl() {
            return Ok(read(self.get(user_key)?.as_ref()));
        }
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_get_visit(self.state, ns, user_key, read)
    }

    /// Calls `visit` with every entry, in an unspecified order: [`entries`](Self::entries) or
    /// [`iter`](Self::iter) without collecting the entries first. The heap backend lends the
    /// entries it stores; the LSM backend decodes each entry as its scan reaches it, so a
    /// damaged block met mid-scan ends the call with its error after `visit` saw the entries
    /// before it (R80). With a TTL it visits what `entries` returns (expired entries left out
    /// and removed).
    ///
    /// ```
    /// # use flowstate::*;
    /// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    /// let prices = backend.register(MapStateDescriptor::<String, f64>::new("prices"))?;
    /// backend.set_current_key(&7);
    /// backend.map(&prices).put("apple".into(), 0.5)?;
    /// backend.map(&prices).put("pear".into(), 0.75)?;
    /// let mut total = 0.0;
    /// backend.map(&prices).for_each(|_, price| total += price)?;
    /// assert_eq!(total, 1.25);
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn for_each(&mut self, mut visit: impl FnMut(&UK, &UV)) -> Result<()> {
        if self.has_ttl() {
            for (k, v) in self.entries()? {
                visit(&k, &v);
            }
            return Ok(());
        }
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_visit(self.state, ns, visit)
    }

    /// Whether `user_key` is present (with a TTL: and not expired).
    pub fn contains(&mut self, user_key: &UK) -> Result<bool> {
        if self.has_ttl() {
            return Ok(self.get(user_key)?.is_some());
        }
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        self.backend.map_contains(self.state, ns, user_key)
    }

    /// Sets the value of `user_key`.
    pub fn put(&mut self, user_key: UK, value: UV) -> Result<()> {
        let ttl = self.ttl()?;
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some((t, raw)) = ttl else {
            return self.backend.map_put(self.state, ns, user_key, value);
        };
        self.backend
            .map_put(raw, ns, user_key, TtlValue::new(value, t.now))
    }

    /// Sets every entry of `entries`; a later entry wins over an earlier one with the same key.
    pub fn put_all(&mut self, entries: impl IntoIterator<Item = (UK, UV)>) -> Result<()> {
        let ttl = self.ttl()?;
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some((t, raw)) = ttl else {
            let entries: Vec<(UK, UV)> = entries.into_iter().collect();
            return self.backend.map_put_all(self.state, ns, entries);
        };
        let entries = entries
            .into_iter()
            .map(|(k, v)| (k, TtlValue::new(v, t.now)))
            .collect();
        self.backend.map_put_all(raw, ns, entries)
    }

    /// Removes `user_key`; removing an absent key does nothing.
    pub fn remove(&mut self, user_key: &UK) -> Result<()> {
        let ttl = self.ttl()?;
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        match ttl {
            Some((_, raw)) => self.backend.map_remove(raw, ns, user_key),
            None => self.backend.map_remove(self.state, ns, user_key),
        }
    }

    /// Every entry, in an unspecified order (with a TTL: the expired ones left out, R63, and
    /// removed, R64).
    pub fn entries(&mut self) -> Result<Vec<(UK, UV)>> {
        let ttl = self.ttl()?;
        let ns = self.ns.get(&*self.backend, self.state.id)?;
        let Some((t, raw)) = ttl else {
            return self.backend.map_entries(self.state, ns);
        };
        let stored = self.backend.map_entries(raw, ns)?;
        let mut result = Vec::with_capacity(stored.len());
        let mut refreshed = Vec::new();
        for (k, v) in stored {
            if t.expired(&v) {
                self.backend.map_remove(raw, ns, &k)?;
                if t.config.returns_expired() {
                    result.push((k, v.value));
                }
                continue;
            }
            if t.config.refresh_on_read() {
                refreshed.push((k.clone(), TtlValue::new(v.value.clone(), t.now)));
            }
            result.push((k, v.value));
        }
        if !refreshed.is_empty() {
            self.backend.map_put_all(raw, ns, refreshed)?;
        }
        Ok(result)
    }

    /// Every user key, in an unspecified order.
    pub fn keys(&mut self) -> Result<Vec<UK>> {
        Ok(self.entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every value, in an unspecified order.
    pub fn values(&mut self) -> Result<Vec<UV>> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Whether the map has no entry (with a TTL: no entry that has not expired).
    pub fn is_empty(&mut self) -> Result<bool> {
        if self.has_ttl() {
            return Ok(self.entries()?.is_empty());
        }
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
    pub fn iter(mut self) -> Result<MapCursor<'a, K, B, UK, UV, N>> {
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
