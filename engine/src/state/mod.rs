//! The five state types: descriptors, handles and the accessors operator code calls.
//!
//! A descriptor names a state and fixes its types; registering it with a backend returns a
//! cheap `Copy` handle; `backend.value(&handle)` (and `list`, `map`, `reducing`,
//! `aggregating`) returns an accessor bound to the current key, optionally narrowed to a
//! namespace with `.namespace(&ns)`. spec/state-semantics.md states every rule.

mod aggregating;
mod list;
mod map;
mod reducing;
pub mod ttl;
pub(crate) mod ttl_filter;
mod value;

use std::borrow::Cow;
use std::fmt;
use std::hash::Hash;

pub use aggregating::{
    AggregateFunction, AggregatingAccess, AggregatingState, AggregatingStateDescriptor,
};
pub use list::{ListAccess, ListState, ListStateDescriptor};
pub use map::{MapAccess, MapCursor, MapState, MapStateDescriptor, MapStore};
pub use reducing::{ReducingAccess, ReducingState, ReducingStateDescriptor};
pub use ttl::{TtlConfig, TtlUpdate, TtlValue, TtlVisibility};
pub use value::{ValueAccess, ValueState, ValueStateDescriptor};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::snapshot::EncodedState;

/// A type usable as a key (and as a map state's user key): encodable, hashable, comparable.
pub trait Key: Codec + Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Codec + Clone + Eq + Hash + Send + Sync + 'static> Key for T {}

/// A type usable as a state value, list element or accumulator.
pub trait StateValue: Codec + Clone + Send + Sync + 'static {}
impl<T: Codec + Clone + Send + Sync + 'static> StateValue for T {}

/// A type usable as a namespace (a window, say). `()` is the namespace of state that has none.
///
/// Implement it for your own window types with an empty `impl Namespace for MyWindow {}`.
pub trait Namespace: Codec + Clone + Eq + Hash + Send + Sync + 'static {
    /// The namespace used when an accessor is not given one: `Some(())` for `()`, `None`
    /// (accessing without `.namespace(&ns)` is an error) for every other type.
    fn implicit() -> Option<Self> {
        None
    }
}

impl Namespace for () {
    fn implicit() -> Option<Self> {
        Some(())
    }
}

macro_rules! plain_namespace {
    ($($t:ty),*) => { $(impl Namespace for $t {})* };
}
plain_namespace!(
    u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize, bool, char, String
);
impl<T: Namespace> Namespace for Option<T> {}
impl<T: Namespace> Namespace for Vec<T> {}
impl<A: Namespace, B: Namespace> Namespace for (A, B) {}
impl<A: Namespace, B: Namespace, C: Namespace> Namespace for (A, B, C) {}

/// A time window `[start, end)` in milliseconds, the usual namespace of windowed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    /// First millisecond of the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }
}

impl Codec for TimeWindow {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("time-window")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.start.encode(out);
        self.end.encode(out);
    }
    fn decode_from(input: &mut &[u8]) -> std::result::Result<Self, crate::codec::CodecError> {
        Ok(TimeWindow {
            start: i64::decode_from(input)?,
            end: i64::decode_from(input)?,
        })
    }
}

impl Namespace for TimeWindow {}

/// The kind of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// A single value per key and namespace.
    Value,
    /// An ordered list of elements.
    List,
    /// A map from user keys to values.
    Map,
    /// A value folded with a reduce function.
    Reducing,
    /// An accumulator folded with an [`AggregateFunction`].
    Aggregating,
}

impl StateKind {
    /// The kind's stable name, as written in snapshot metadata.
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
            StateKind::Reducing => "reducing",
            StateKind::Aggregating => "aggregating",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name and version of a codec, as recorded in snapshot metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodecInfo {
    /// [`Codec::codec_name`].
    pub name: String,
    /// [`Codec::VERSION`].
    pub version: u32,
}

impl CodecInfo {
    /// The codec of `T`.
    pub fn of<T: Codec>() -> Self {
        CodecInfo {
            name: T::codec_name().into_owned(),
            version: T::VERSION,
        }
    }
}

impl fmt::Display for CodecInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What a registered state is: name, kind and codecs. Snapshots carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateMeta {
    /// The state's name, unique within a backend.
    pub name: String,
    /// The state's kind.
    pub kind: StateKind,
    /// The namespace codec (`unit` for state without a namespace).
    pub namespace: CodecInfo,
    /// The codec of the value, list element or accumulator.
    pub value: CodecInfo,
    /// The codec of the user key, for map state.
    pub user_key: Option<CodecInfo>,
}

impl fmt::Display for StateMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} state of {}", self.kind, self.value)?;
        if let Some(uk) = &self.user_key {
            write!(f, " by {uk}")?;
        }
        write!(f, " in namespace {}", self.namespace)
    }
}

/// The index of a registered state within its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

mod sealed {
    pub trait Sealed {}
}

/// A handle to a registered state of any kind. Implemented by the five handle types only.
pub trait StateHandle: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The namespace type of the state.
    type Namespace: Namespace;
    /// How the heap backend stores one entry's state.
    #[doc(hidden)]
    type Stored: Clone + Send + Sync + 'static;
    /// Per-state data the heap backend keeps beside the table (a reduce or aggregate function).
    #[doc(hidden)]
    type Extra: Clone + Send + Sync + 'static;
    /// The handle of the same state registered with a TTL: its values, list elements or map
    /// values wrapped in [`TtlValue`] (what the backend stores for it).
    #[doc(hidden)]
    type Ttl: StateHandle<Namespace = Self::Namespace>;
    /// The kind of state.
    const KIND: StateKind;
    /// The state's id within the backend that issued the handle.
    fn id(&self) -> StateId;
    #[doc(hidden)]
    fn from_id(id: StateId) -> Self;
    #[doc(hidden)]
    fn meta(name: &str) -> StateMeta;
    #[doc(hidden)]
    fn encode_stored(stored: &Self::Stored) -> EncodedState;
    /// What follows the namespace when the entry is pushed to an encoded run: value-like
    /// states encode in place (no allocation), lists and maps as [`EncodedState`].
    #[doc(hidden)]
    fn encode_stored_run(
        stored: &Self::Stored,
        run: &mut crate::snapshot::EncodedRun,
        key: impl FnOnce(&mut Vec<u8>),
        namespace: impl FnOnce(&mut Vec<u8>),
    ) {
        run.push_with(
            key,
            namespace,
            crate::snapshot::RunValueSource::State(Self::encode_stored(stored)),
        );
    }
    #[doc(hidden)]
    fn decode_stored(encoded: &EncodedState) -> Result<Self::Stored, crate::codec::CodecError>;
    /// How much of `stored` (a state with a TTL, whose values are `TtlValue`s) has expired at
    /// `now`, without encoding it.
    #[doc(hidden)]
    fn stored_expiry(stored: &Self::Stored, ttl: &TtlConfig, now: u64) -> ttl::Expiry;
}

/// The error for an encoded state of the wrong shape (a list where a value was expected...).
pub(crate) fn wrong_shape(expected: &'static str) -> crate::codec::CodecError {
    crate::codec::CodecError::Invalid(Cow::Owned(format!(
        "expected the encoded state of a {expected}"
    )))
}

/// A state whose namespaces can be merged (list, reducing and aggregating state).
pub trait MergingState: StateHandle {
    /// [`StateHandle::Ttl`], as a merging state.
    #[doc(hidden)]
    type TtlMerging: MergingState<Namespace = Self::Namespace>;
    #[doc(hidden)]
    fn merge_stored(extra: &Self::Extra, target: &mut Self::Stored, source: Self::Stored);
}

/// A state descriptor: registering it with a backend yields a handle.
pub trait StateDescriptor {
    /// The handle registration returns.
    type Handle: StateHandle;
    /// The state's name.
    fn name(&self) -> &str;
    /// Registers the state with `backend` (what `backend.register(descriptor)` calls).
    fn register_in<K: Key, B: crate::KeyedStateBackend<K> + ?Sized>(
        self,
        backend: &mut B,
    ) -> Result<Self::Handle>;
}

/// The namespace an accessor works in: given by the caller, or the state's implicit one.
pub(crate) enum NsSlot<'a, N> {
    Given(&'a N),
    Implicit(Option<N>),
}

impl<'a, N: Namespace> NsSlot<'a, N> {
    pub(crate) fn implicit() -> Self {
        NsSlot::Implicit(N::implicit())
    }

    pub(crate) fn get<K: Key, B: crate::KeyedStateBackend<K> + ?Sized>(
        &self,
        backend: &B,
        id: StateId,
    ) -> Result<&N> {
        match self {
            NsSlot::Given(ns) => Ok(ns),
            NsSlot::Implicit(Some(ns)) => Ok(ns),
            NsSlot::Implicit(None) => Err(Error::NamespaceRequired {
                state: backend
                    .state_meta(id)
                    .map(|m| m.name.clone())
                    .unwrap_or_else(|| format!("#{}", id.0)),
            }),
        }
    }
}

macro_rules! handle_boilerplate {
    ($handle:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $handle<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $handle<$($p),*> {}
        impl<$($p),*> std::fmt::Debug for $handle<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($handle)).field(&self.id.0).finish()
            }
        }
        impl<$($p),*> PartialEq for $handle<$($p),*> {
            fn eq(&self, other: &Self) -> bool {
                self.id == other.id
            }
        }
        impl<$($p),*> Eq for $handle<$($p),*> {}
    };
}
pub(crate) use handle_boilerplate;
