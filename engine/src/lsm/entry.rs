//! What the LSM tree stores under a key, and what a point read in one source finds.
//!
//! Every source of the tree (the memtable, immutable memtables, tables) holds at most one
//! [`Entry`] per key: a value, a tombstone, or merge operands still to be applied to whatever
//! older sources hold. The one merge operator is list append (spec/lsm-key-layout.md, section
//! "Entries and merging"): operands are concatenated, oldest first, after the base value.

use std::borrow::Cow;
use std::fmt;

use super::key::Hex;

/// One key's entry in one source of the tree.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The key's value; older entries of the key are hidden.
    Put(Vec<u8>),
    /// A tombstone: the key is absent; older entries of the key are hidden.
    Delete,
    /// List-append operands, concatenated oldest first, to append to the value older sources
    /// hold (or to nothing, if they hold none or a tombstone).
    Merge(Vec<u8>),
}

impl Entry {
    /// The entry, borrowed.
    pub fn borrowed(&self) -> EntryRef<'_> {
        match self {
            Entry::Put(v) => EntryRef::Put(v),
            Entry::Delete => EntryRef::Delete,
            Entry::Merge(ops) => EntryRef::Merge(ops),
        }
    }

    /// What a point read that finds this entry returns.
    pub fn into_lookup(self) -> Lookup<'static> {
        match self {
            Entry::Put(v) => Lookup::Found(Cow::Owned(v)),
            Entry::Delete => Lookup::Deleted,
            Entry::Merge(ops) => Lookup::MergeOperands(Cow::Owned(ops)),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.borrowed().fmt(f)
    }
}

/// An [`Entry`] borrowed from the source that holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryRef<'a> {
    /// The key's value.
    Put(&'a [u8]),
    /// A tombstone.
    Delete,
    /// List-append operands, concatenated oldest first.
    Merge(&'a [u8]),
}

impl<'a> EntryRef<'a> {
    /// The entry, copied.
    pub fn to_entry(self) -> Entry {
        match self {
            EntryRef::Put(v) => Entry::Put(v.to_vec()),
            EntryRef::Delete => Entry::Delete,
            EntryRef::Merge(ops) => Entry::Merge(ops.to_vec()),
        }
    }

    /// What a point read that finds this entry returns (no copy).
    pub fn lookup(self) -> Lookup<'a> {
        match self {
            EntryRef::Put(v) => Lookup::Found(Cow::Borrowed(v)),
            EntryRef::Delete => Lookup::Deleted,
            EntryRef::Merge(ops) => Lookup::MergeOperands(Cow::Borrowed(ops)),
        }
    }
}

impl fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRef::Put(v) => write!(f, "Put({})", Hex(v)),
            EntryRef::Delete => f.write_str("Delete"),
            EntryRef::Merge(ops) => write!(f, "Merge({})", Hex(ops)),
        }
    }
}

/// What a point read in one source finds for a key.
///
/// [`merge::resolve`](super::merge::resolve) combines the lookups of all sources, newest
/// first, into the key's value. Sources that hold their bytes (memtables) lend them; sources
/// that decode them (tables) hand them over owned.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Lookup<'a> {
    /// A value: the key's value is this, with the operands of newer sources appended.
    Found(Cow<'a, [u8]>),
    /// A tombstone: the key's value is only what newer sources appended, if anything.
    Deleted,
    /// Merge operands (oldest first): older sources must be read for the base.
    MergeOperands(Cow<'a, [u8]>),
    /// Nothing for this key: read older sources.
    NotFound,
}

impl fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Found(v) => write!(f, "Found({})", Hex(v)),
            Lookup::Deleted => f.write_str("Deleted"),
            Lookup::MergeOperands(ops) => write!(f, "MergeOperands({})", Hex(ops)),
            Lookup::NotFound => f.write_str("NotFound"),
        }
    }
}

impl<'a> From<Option<EntryRef<'a>>> for Lookup<'a> {
    fn from(entry: Option<EntryRef<'a>>) -> Self {
        entry.map_or(Lookup::NotFound, EntryRef::lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_agree() {
        for e in [
            Entry::Put(vec![1, 2]),
            Entry::Delete,
            Entry::Merge(vec![]),
            Entry::Merge(vec![0xab]),
        ] {
            assert_eq!(e.borrowed().to_entry(), e);
            assert_eq!(e.borrowed().lookup(), e.clone().into_lookup());
        }
        assert_eq!(Lookup::from(None), Lookup::NotFound);
        assert_eq!(format!("{:?}", Entry::Put(vec![0xab, 1])), "Put(ab01)");
        assert_eq!(
            format!("{:?}", Lookup::MergeOperands(Cow::Borrowed(&[2]))),
            "MergeOperands(02)"
        );
    }
}
