//! Entries as a writer takes them and as a reader hands them out.

use crate::codec::varint;

use super::meta::ValueShape;

/// The state of one entry, borrowed from the caller for writing (the engine's
/// `EncodedState` maps onto it without copying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryValue<'a> {
    /// The bytes of a value, reducing value or accumulator.
    Value(&'a [u8]),
    /// The elements of a list, in order.
    List(&'a [Vec<u8>]),
    /// The (user key, value) pairs of a map, strictly ascending by user-key bytes.
    Map(&'a [(Vec<u8>, Vec<u8>)]),
}

impl EntryValue<'_> {
    /// The shape of this value.
    pub fn shape(&self) -> ValueShape {
        match self {
            EntryValue::Value(_) => ValueShape::Value,
            EntryValue::List(_) => ValueShape::List,
            EntryValue::Map(_) => ValueShape::Map,
        }
    }

    /// The number of bytes [`encode`](Self::encode) appends.
    pub(crate) fn encoded_len(&self) -> usize {
        fn bytes(b: &[u8]) -> usize {
            varint::encoded_len(b.len() as u64) + b.len()
        }
        match self {
            EntryValue::Value(v) => bytes(v),
            EntryValue::List(items) => {
                varint::encoded_len(items.len() as u64)
                    + items.iter().map(|e| bytes(e)).sum::<usize>()
            }
            EntryValue::Map(pairs) => {
                varint::encoded_len(pairs.len() as u64)
                    + pairs
                        .iter()
                        .map(|(k, v)| bytes(k) + bytes(v))
                        .sum::<usize>()
            }
        }
    }

    /// Appends the encoding of the state.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use crate::record::put_bytes;
        match self {
            EntryValue::Value(v) => put_bytes(v, out),
            EntryValue::List(items) => {
                varint::encode_u64(items.len() as u64, out);
                for e in *items {
                    put_bytes(e, out);
                }
            }
            EntryValue::Map(pairs) => {
                varint::encode_u64(pairs.len() as u64, out);
                for (k, v) in *pairs {
                    put_bytes(k, out);
                    put_bytes(v, out);
                }
            }
        }
    }
}

/// One entry as read from a snapshot, borrowing the reader's block buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedEntry<'a> {
    /// The index of the state in [`SnapshotMeta::states`](super::SnapshotMeta::states).
    pub state_index: u32,
    /// The key's bytes.
    pub key: &'a [u8],
    /// The namespace's bytes.
    pub namespace: &'a [u8],
    /// The state's bytes, in the shape of the state's kind.
    pub value: DecodedValue<'a>,
}

/// The state of a decoded entry. Its bytes have been checked (lengths, counts, map order);
/// iterating never fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodedValue<'a> {
    /// A value, reducing value or accumulator.
    Value(&'a [u8]),
    /// The elements of a list.
    List(ListElements<'a>),
    /// The pairs of a map, strictly ascending by user key.
    Map(MapEntries<'a>),
    /// The entry was removed (a removal section of a delta file, section 3.11): no state.
    Removed,
}

impl DecodedValue<'_> {
    /// An owned copy.
    pub fn to_owned_value(&self) -> OwnedValue {
        match self {
            DecodedValue::Value(v) => OwnedValue::Value(v.to_vec()),
            DecodedValue::List(items) => OwnedValue::List(items.map(<[u8]>::to_vec).collect()),
            DecodedValue::Map(pairs) => {
                OwnedValue::Map(pairs.map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
            }
            DecodedValue::Removed => OwnedValue::Removed,
        }
    }
}

/// The elements of a decoded list, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListElements<'a> {
    bytes: &'a [u8],
    remaining: usize,
}

impl<'a> ListElements<'a> {
    /// `bytes` must hold exactly `count` length-prefixed elements (the reader checked them).
    pub(crate) fn new(bytes: &'a [u8], count: usize) -> Self {
        ListElements {
            bytes,
            remaining: count,
        }
    }
}

fn next_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(varint::decode_u64(bytes).ok()?).ok()?;
    let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
    *bytes = tail;
    Some(head)
}

impl<'a> Iterator for ListElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Cannot fail on checked bytes; ending early would only shorten the list.
        next_bytes(&mut self.bytes)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ListElements<'_> {}

/// The (user key, value) pairs of a decoded map, strictly ascending by user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntries<'a> {
    bytes: &'a [u8],
    remaining: usize,
}

impl<'a> MapEntries<'a> {
    /// `bytes` must hold exactly `count` length-prefixed pairs (the reader checked them).
    pub(crate) fn new(bytes: &'a [u8], count: usize) -> Self {
        MapEntries {
            bytes,
            remaining: count,
        }
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let k = next_bytes(&mut self.bytes)?;
        let v = next_bytes(&mut self.bytes)?;
        Some((k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for MapEntries<'_> {}

/// The state of one entry, owned: what a test or tool keeps of a [`DecodedValue`], and what it
/// writes back through [`as_entry_value`](OwnedValue::as_entry_value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedValue {
    /// A value, reducing value or accumulator.
    Value(Vec<u8>),
    /// The elements of a list.
    List(Vec<Vec<u8>>),
    /// The pairs of a map, strictly ascending by user key.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
    /// A removal (delta files only).
    Removed,
}

impl OwnedValue {
    /// A borrowed view for [`SnapshotWriter::add_entry`](super::SnapshotWriter::add_entry);
    /// `None` for a removal, which [`SnapshotWriter::add_removal`](super::SnapshotWriter::add_removal)
    /// writes.
    pub fn as_entry_value(&self) -> Option<EntryValue<'_>> {
        match self {
            OwnedValue::Value(v) => Some(EntryValue::Value(v)),
            OwnedValue::List(items) => Some(EntryValue::List(items)),
            OwnedValue::Map(pairs) => Some(EntryValue::Map(pairs)),
            OwnedValue::Removed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_matches_encode() {
        let list = vec![vec![1u8; 200], vec![], vec![3]];
        let map = vec![(vec![1u8], vec![2u8; 130]), (vec![2], vec![])];
        for v in [
            EntryValue::Value(&[9; 128]),
            EntryValue::List(&list),
            EntryValue::Map(&map),
        ] {
            let mut out = Vec::new();
            v.encode(&mut out);
            assert_eq!(out.len(), v.encoded_len());
        }
        let mut out = Vec::new();
        EntryValue::List(&list).encode(&mut out);
        let items: Vec<_> = ListElements::new(&out[1..], 3).collect();
        assert_eq!(items, [&list[0][..], &[][..], &[3][..]]);
    }
}
