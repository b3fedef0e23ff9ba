//! The properties block: what the table holds (counts, key range, raw sizes), how it was
//! written, and properties the caller attaches (the tree stores the key-group range there).
//!
//! ## Format
//!
//! | size | field |
//! |---|---|
//! | varint | entries `E` (point entries of every kind) |
//! | varint | deletes (point tombstones), at most `E` |
//! | varint | merges; deletes + merges ≤ `E` |
//! | varint | range tombstones |
//! | varint | data blocks; 0 exactly when `E` is 0, at most `E` |
//! | varint | raw key bytes (sum of key lengths, before prefix compression) |
//! | varint | raw value bytes |
//! | varint + bytes | smallest key, only if `E` > 0 |
//! | varint + bytes | largest key, only if `E` > 0; at least the smallest |
//! | varint | restart interval, 1 ..= 65 535 |
//! | varint | target block size, 1 ..= 64 MiB |
//! | 1 | compression the writer was asked for: `00` none, `01` LZ4, `02` zstd |
//! | varint | bloom bits per key, 0 ..= 64 (0: no filter) |
//! | varint + bytes | prefix extractor name, UTF-8, at most 65 535 bytes (empty: none) |
//! | varint | user property count `U` |
//! | `U` × (varint + bytes, varint + bytes) | name (UTF-8, at most 65 535 bytes), value; names strictly ascending |

use std::collections::BTreeMap;

use crate::codec::compress::CompressionKind;
use crate::codec::varint;
use crate::cursor::Cursor;
use crate::record::{put_bytes, put_str, MAX_NAME_LEN};
use crate::FormatError;

use super::{MAX_BLOOM_BITS_PER_KEY, MAX_KEY_LEN, MAX_RESTART_INTERVAL};

/// What a table holds and how it was written: its properties block.
///
/// See the module of [`TableReader`](super::TableReader) for how a reader checks it against
/// the rest of the file.
///
/// ## Format
///
/// | size | field |
/// |---|---|
/// | varint × 7 | entries, deletes, merges, range tombstones, data blocks, raw key bytes, raw value bytes |
/// | 2 × (varint + bytes) | smallest and largest key, if there are entries |
/// | varint, varint, 1, varint | restart interval, block size, compression code, bloom bits per key |
/// | varint + bytes | prefix extractor name (empty: none) |
/// | varint, then pairs | user properties, names strictly ascending |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProperties {
    /// Point entries of every kind.
    pub entries: u64,
    /// Point tombstones ([`EntryKind::Delete`](super::EntryKind::Delete)).
    pub deletes: u64,
    /// Merge operands ([`EntryKind::Merge`](super::EntryKind::Merge)).
    pub merges: u64,
    /// Range tombstones, after normalization.
    pub range_tombstones: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// The sum of the lengths of the keys of the entries.
    pub raw_key_bytes: u64,
    /// The sum of the lengths of their values.
    pub raw_value_bytes: u64,
    /// The smallest key of a point entry; `None` when there is none.
    pub smallest_key: Option<Vec<u8>>,
    /// The largest key of a point entry; `None` when there is none.
    pub largest_key: Option<Vec<u8>>,
    /// Entries per restart point in the data blocks.
    pub restart_interval: u32,
    /// The uncompressed size at which the writer closed data blocks.
    pub block_size: u32,
    /// The compression the writer applied where it paid off.
    pub compression: CompressionKind,
    /// Bloom filter bits per key; 0 when the table has no filter.
    pub bloom_bits_per_key: u32,
    /// The name of the prefix extractor whose prefixes are in the filter, if any.
    pub prefix_extractor: Option<String>,
    /// Properties the caller attached, by name.
    pub user_properties: BTreeMap<String, Vec<u8>>,
}

impl TableProperties {
    /// Put entries: entries less deletes and merges.
    pub fn puts(&self) -> u64 {
        self.entries - self.deletes - self.merges
    }

    /// The user property `name`.
    pub fn user_property(&self, name: &str) -> Option<&[u8]> {
        self.user_properties.get(name).map(Vec::as_slice)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.entries,
            self.deletes,
            self.merges,
            self.range_tombstones,
            self.data_blocks,
            self.raw_key_bytes,
            self.raw_value_bytes,
        ] {
            varint::encode_u64(v, out);
        }
        if self.entries > 0 {
            put_bytes(self.smallest_key.as_deref().unwrap_or_default(), out);
            put_bytes(self.largest_key.as_deref().unwrap_or_default(), out);
        }
        varint::encode_u64(self.restart_interval.into(), out);
        varint::encode_u64(self.block_size.into(), out);
        out.push(self.compression.code());
        varint::encode_u64(self.bloom_bits_per_key.into(), out);
        put_str(self.prefix_extractor.as_deref().unwrap_or_default(), out);
        varint::encode_u64(self.user_properties.len() as u64, out);
        for (name, value) in &self.user_properties {
            put_str(name, out);
            put_bytes(value, out);
        }
    }

    /// The encoded length.
    pub(crate) fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        self.encode(&mut out);
        out.len()
    }

    pub(crate) fn decode(mut c: Cursor<'_>) -> Result<TableProperties, FormatError> {
        let mut counts = [0u64; 7];
        let mut at = [0usize; 7];
        for (v, a) in counts.iter_mut().zip(at.iter_mut()) {
            *a = c.pos();
            *v = c.varint()?;
        }
        let [entries, deletes, merges, range_tombstones, data_blocks, raw_key_bytes, raw_value_bytes] =
            counts;
        if deletes.checked_add(merges).is_none_or(|n| n > entries) {
            return Err(c.corrupt_at(
                at[1],
                format!("{deletes} deletes and {merges} merges among {entries} entries"),
            ));
        }
        if (entries == 0) != (data_blocks == 0) || data_blocks > entries {
            return Err(c.corrupt_at(
                at[4],
                format!("{data_blocks} data blocks for {entries} entries"),
            ));
        }
        let (smallest_key, largest_key) = if entries > 0 {
            let mut keys = [&[][..]; 2];
            for k in &mut keys {
                let at = c.pos();
                *k = c.len_prefixed()?;
                if k.len() > MAX_KEY_LEN {
                    return Err(c.limit_at(at, "key length", k.len() as u64, MAX_KEY_LEN as u64));
                }
            }
            if keys[0] > keys[1] {
                return Err(c.corrupt_at(at[6], "smallest key after the largest key"));
            }
            (Some(keys[0].to_vec()), Some(keys[1].to_vec()))
        } else {
            (None, None)
        };
        let mut bounded = |what: &'static str, max: u64, min: u64| {
            let at = c.pos();
            let v = c.varint()?;
            if v < min || v > max {
                return Err(c.corrupt_at(at, format!("{what} {v} is outside {min} ..= {max}")));
            }
            Ok(v as u32)
        };
        let restart_interval = bounded("restart interval", MAX_RESTART_INTERVAL as u64, 1)?;
        let block_size = bounded("block size", crate::MAX_BLOCK_LEN.into(), 1)?;
        let at_code = c.pos();
        let code = c.u8()?;
        let compression = CompressionKind::from_code(code)
            .ok_or_else(|| c.corrupt_at(at_code, format!("unknown compression code {code}")))?;
        let at_bits = c.pos();
        let bloom_bits_per_key = c.varint()?;
        if bloom_bits_per_key > MAX_BLOOM_BITS_PER_KEY.into() {
            return Err(c.corrupt_at(
                at_bits,
                format!(
                    "{bloom_bits_per_key} bloom bits per key (at most {MAX_BLOOM_BITS_PER_KEY})"
                ),
            ));
        }
        let name = c.string(MAX_NAME_LEN, "prefix extractor name length")?;
        let prefix_extractor = (!name.is_empty()).then(|| name.to_owned());
        // A property takes at least 2 bytes: two empty strings.
        let count = c.count(2, "user property")?;
        let mut user_properties = BTreeMap::new();
        let mut prev: Option<&str> = None;
        for _ in 0..count {
            let at = c.pos();
            let name = c.string(MAX_NAME_LEN, "user property name length")?;
            if prev.is_some_and(|p| name <= p) {
                return Err(c.corrupt_at(
                    at,
                    "user property names are not strictly ascending: duplicate or out of order",
                ));
            }
            prev = Some(name);
            let value = c.len_prefixed()?;
            user_properties.insert(name.to_owned(), value.to_vec());
        }
        c.finish("properties")?;
        Ok(TableProperties {
            entries,
            deletes,
            merges,
            range_tombstones,
            data_blocks,
            raw_key_bytes,
            raw_value_bytes,
            smallest_key,
            largest_key,
            restart_interval,
            block_size,
            compression,
            bloom_bits_per_key: bloom_bits_per_key as u32,
            prefix_extractor,
            user_properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TableProperties {
        TableProperties {
            entries: 10,
            deletes: 2,
            merges: 3,
            range_tombstones: 1,
            data_blocks: 2,
            raw_key_bytes: 50,
            raw_value_bytes: 70,
            smallest_key: Some(b"a".to_vec()),
            largest_key: Some(b"z".to_vec()),
            restart_interval: 16,
            block_size: 4096,
            compression: CompressionKind::Lz4,
            bloom_bits_per_key: 10,
            prefix_extractor: Some("fixed:3".into()),
            user_properties: [("kg".to_owned(), vec![0, 1, 0, 7])].into_iter().collect(),
        }
    }

    fn round_trip(p: &TableProperties) -> Result<TableProperties, FormatError> {
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        TableProperties::decode(Cursor::new(&out, "t", 0))
    }

    #[test]
    fn round_trips() {
        let p = sample();
        assert_eq!(round_trip(&p).unwrap(), p);
        assert_eq!(p.puts(), 5);
        assert_eq!(p.user_property("kg"), Some(&[0, 1, 0, 7][..]));
        let empty = TableProperties {
            entries: 0,
            deletes: 0,
            merges: 0,
            data_blocks: 0,
            smallest_key: None,
            largest_key: None,
            prefix_extractor: None,
            user_properties: BTreeMap::new(),
            ..p
        };
        assert_eq!(round_trip(&empty).unwrap(), empty);
    }

    #[test]
    fn inconsistent_fields_are_errors() {
        let bad = [
            TableProperties {
                deletes: 9,
                ..sample()
            },
            TableProperties {
                data_blocks: 0,
                ..sample()
            },
            TableProperties {
                data_blocks: 11,
                ..sample()
            },
            TableProperties {
                smallest_key: Some(b"zz".to_vec()),
                ..sample()
            },
            TableProperties {
                restart_interval: 0,
                ..sample()
            },
            TableProperties {
                block_size: 0,
                ..sample()
            },
            TableProperties {
                bloom_bits_per_key: 65,
                ..sample()
            },
        ];
        for p in bad {
            assert!(round_trip(&p).is_err(), "{p:?}");
        }
        let mut out = Vec::new();
        sample().encode(&mut out);
        out.push(0);
        assert!(TableProperties::decode(Cursor::new(&out, "t", 0)).is_err());
    }
}
