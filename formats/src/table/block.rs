//! Data blocks: entries with keys prefix-compressed against the previous key, a restart point
//! every N entries, and the restart array at the end, so that a lookup binary-searches the
//! restart points and then scans at most N entries.
//!
//! ## Format
//!
//! The uncompressed payload of a data block (the frame around it: [`super::frame`]):
//!
//! | size | field |
//! |---|---|
//! | … | entries, see below |
//! | 4 × `R` | restart offsets, `u32` LE: the payload offset of entries 0, N, 2N, … |
//! | 4 | `R`, `u32` LE: the number of restart points, `ceil(entries / N)`, at least 1 |
//!
//! An entry:
//!
//! | size | field |
//! |---|---|
//! | varint | `shared`: bytes the key shares with the previous key of the block (0 at a restart point) |
//! | varint | `unshared`: bytes of the key that follow |
//! | varint | value tag: value length × 4 + kind code ([`EntryKind`]) |
//! | `unshared` | the key's last `unshared` bytes |
//! | value length | the value (empty for a delete) |
//!
//! `N` is the table's restart interval (properties block). Keys ascend strictly within the
//! block and across blocks; the last key of a block is its index key. Off a restart point,
//! `shared` is the whole common prefix with the previous key (one encoding per block), so that
//! one byte decides the order: the key's first unshared byte is larger than the previous key's
//! byte at that position, or the previous key ends there.

use std::fmt;

use crate::codec::varint;
use crate::cursor::Cursor;
use crate::FormatError;

use super::frame::Payload;
use super::{EntryKind, MAX_KEY_LEN};

/// Builds the payload of one data block.
#[derive(Debug)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    interval: usize,
    count: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// An empty block with a restart point every `interval` entries (at least 1).
    pub(crate) fn new(interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: Vec::new(),
            interval: interval.max(1),
            count: 0,
            last_key: Vec::new(),
        }
    }

    /// Whether no entry has been added since the last [`reset`](BlockBuilder::reset).
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payload length [`finish`](BlockBuilder::finish) would produce now.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// The most bytes adding (`key`, `value`) can add to [`len`](BlockBuilder::len).
    pub(crate) fn growth_bound(key: &[u8], value: &[u8]) -> usize {
        varint::encoded_len(key.len() as u64) * 2
            + varint::encoded_len((value.len() as u64) << 2 | 3)
            + key.len()
            + value.len()
            + 4
    }

    /// The last key added.
    pub(crate) fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends an entry; `key` is strictly after the previous one (the caller checked).
    pub(crate) fn add(&mut self, key: &[u8], kind: EntryKind, value: &[u8]) {
        let shared = if self.count % self.interval == 0 {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            common_prefix(&self.last_key, key)
        };
        let unshared = &key[shared..];
        varint::encode_u64(shared as u64, &mut self.buf);
        varint::encode_u64(unshared.len() as u64, &mut self.buf);
        varint::encode_u64(
            (value.len() as u64) << 2 | u64::from(kind.code()),
            &mut self.buf,
        );
        self.buf.extend_from_slice(unshared);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(unshared);
        self.count += 1;
    }

    /// Appends the restart array and returns the payload; call
    /// [`reset`](BlockBuilder::reset) before the next entry.
    pub(crate) fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        &self.buf
    }

    /// Empties the block for the next one (keeping the buffers).
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.count = 0;
        self.last_key.clear();
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Reads a varint at `pos` of `bytes`: the value and the position after it. One byte (the
/// common case: lengths under 128) without a call.
#[inline(always)]
fn varint_at(bytes: &[u8], pos: usize) -> Option<(u64, usize)> {
    let b = *bytes.get(pos)?;
    if b < 0x80 {
        return Some((u64::from(b), pos + 1));
    }
    let mut rest = bytes.get(pos..)?;
    let before = rest.len();
    let v = varint::decode_u64(&mut rest).ok()?;
    Some((v, pos + before - rest.len()))
}

/// The header of an entry at some position of a block's entries.
#[derive(Debug, Clone, Copy)]
struct RawEntry {
    shared: usize,
    unshared: usize,
    kind: EntryKind,
    value_len: usize,
    /// Where the key suffix starts.
    suffix_at: usize,
}

impl RawEntry {
    /// Decodes the entry at `pos` of `entries`; `None` if it is malformed or does not fit.
    #[inline(always)]
    fn at(entries: &[u8], pos: usize) -> Option<RawEntry> {
        let (shared, p) = varint_at(entries, pos)?;
        let (unshared, p) = varint_at(entries, p)?;
        let (tag, p) = varint_at(entries, p)?;
        let room = (entries.len() - p) as u64;
        let value_len = tag >> 2;
        if unshared > room || value_len > room - unshared {
            return None;
        }
        Some(RawEntry {
            shared: usize::try_from(shared).ok()?,
            unshared: unshared as usize,
            kind: EntryKind::from_code((tag & 3) as u8)?,
            value_len: value_len as usize,
            suffix_at: p,
        })
    }

    fn value_at(&self) -> usize {
        self.suffix_at + self.unshared
    }

    fn end(&self) -> usize {
        self.value_at() + self.value_len
    }
}

/// An entry found in a block: its kind, where its value is, and where the next entry starts
/// (payload positions; a block is at most 64 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) kind: EntryKind,
    pub(crate) value_at: u32,
    pub(crate) value_len: u32,
    pub(crate) next: u32,
}

/// What stepping through a checked block gives: small, so that the per-entry path moves little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// An entry; its key is in the caller's buffer.
    Entry(Found),
    /// The end of the block's entries.
    End,
    /// The bytes at this payload position do not decode (never, in a checked block).
    Broken(usize),
}

/// What the block must agree with: the keys around it, from the index and the properties.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bounds<'a> {
    /// The first key must equal this (the table's smallest key, for the first block).
    pub(crate) first_eq: Option<&'a [u8]>,
    /// The first key must be after this (the previous block's index key).
    pub(crate) first_after: Option<&'a [u8]>,
    /// The last key must equal this (the block's index key).
    pub(crate) last_eq: Option<&'a [u8]>,
}

/// A decompressed data block whose every entry has been checked: what
/// [`BlockCache`](super::BlockCache) holds.
///
/// Checked once, when read: entries tile the payload, keys ascend strictly with the longest
/// shared prefix recorded, restart points sit exactly at every N-th entry with nothing shared,
/// kinds are known, deletes are empty, and the first and last keys agree with the index.
/// Lookups and scans then never see malformed bytes.
pub struct Block {
    buf: Vec<u8>,
    /// The payload is `buf[start..]`, up to `restarts_at + 4 × restart_count + 4`.
    start: usize,
    /// Where the restart array starts, relative to `start` (= the end of the entries).
    restarts_at: usize,
    restart_count: usize,
    entry_count: usize,
    /// The frame's offset in the file.
    offset: u64,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("offset", &self.offset)
            .field("entries", &self.entry_count)
            .field("restarts", &self.restart_count)
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// The error of the malformed entry at `at`: replays its decoding through a cursor, which says
/// precisely what is wrong (cold path).
#[cold]
fn entry_error(c: &Cursor<'_>, entries: &[u8], at: usize) -> FormatError {
    let mut e = c.over(entries);
    let replay = (|| {
        e.take(at)?;
        e.varint()?;
        let unshared = e.varint()?;
        let tag = e.varint()?;
        if EntryKind::from_code((tag & 3) as u8).is_none() {
            return Err(c.corrupt_at(at, format!("unknown entry kind {}", tag & 3)));
        }
        e.take_u64(unshared)?;
        e.take_u64(tag >> 2)?;
        Ok(())
    })();
    replay
        .err()
        .unwrap_or_else(|| c.corrupt_at(at, "malformed entry"))
}

impl Block {
    /// Checks the payload of the data block whose frame is at `offset` of `file`, with a
    /// restart point every `interval` entries, against `bounds`.
    pub(crate) fn decode(
        payload: Payload,
        interval: usize,
        file: &str,
        offset: u64,
        bounds: Bounds<'_>,
    ) -> Result<Block, FormatError> {
        let bytes = payload.bytes();
        let c = payload.cursor(file, offset);
        let n = bytes.len();
        if n < 4 {
            return Err(c.corrupt_at(
                0,
                format!("data block payload of {n} bytes has no room for its restart count"),
            ));
        }
        let count = u32::from_le_bytes(read4(bytes, n - 4)) as usize;
        if count == 0 {
            return Err(c.corrupt_at(n - 4, "data block without restart points (and entries)"));
        }
        if count > (n - 4) / 4 {
            return Err(c.corrupt_at(
                n - 4,
                format!("{count} restart points do not fit in a {n}-byte data block payload"),
            ));
        }
        let restarts_at = n - 4 - 4 * count;
        // Entries end where the restart array starts: an entry can never run into it.
        let entries = &bytes[..restarts_at];
        let mut key: Vec<u8> = Vec::new();
        let mut i = 0usize;
        let mut pos = 0usize;
        let mut until_restart = 0usize;
        while pos < entries.len() {
            let at = pos;
            let restart = until_restart == 0;
            if restart {
                let r = i / interval;
                if r >= count {
                    return Err(c.corrupt_at(
                        at,
                        format!("entry {i} needs restart point {r}, the block has {count}"),
                    ));
                }
                let listed = u32::from_le_bytes(read4(bytes, restarts_at + 4 * r)) as usize;
                if listed != at {
                    return Err(c.corrupt_at(
                        restarts_at + 4 * r,
                        format!("restart point {r} is at {listed}, entry {i} starts at {at}"),
                    ));
                }
                until_restart = interval;
            }
            until_restart -= 1;
            let Some(raw) = RawEntry::at(entries, at) else {
                return Err(entry_error(&c, entries, at));
            };
            let (shared, unshared) = (raw.shared, raw.unshared);
            if restart && shared != 0 {
                return Err(c.corrupt_at(
                    at,
                    format!("entry {i} at a restart point shares {shared} bytes"),
                ));
            }
            if shared > key.len() {
                return Err(c.corrupt_at(
                    at,
                    format!(
                        "entry {i} shares {shared} bytes with a previous key of {}",
                        key.len()
                    ),
                ));
            }
            let key_len = shared as u64 + unshared as u64;
            if key_len > MAX_KEY_LEN as u64 {
                return Err(c.limit_at(at, "key length", key_len, MAX_KEY_LEN as u64));
            }
            if raw.kind == EntryKind::Delete && raw.value_len != 0 {
                return Err(c.corrupt_at(
                    at,
                    format!("delete entry {i} carries a {}-byte value", raw.value_len),
                ));
            }
            let suffix = &entries[raw.suffix_at..raw.value_at()];
            if i > 0 {
                // Keys ascend strictly. Off a restart point the shared prefix is the longest
                // one, so one byte decides: the first byte after it must be larger (or the key
                // must extend the previous one).
                let ordered = if restart {
                    suffix > key.as_slice()
                } else {
                    match (suffix.first(), key.get(shared)) {
                        (Some(s), Some(p)) => s > p,
                        (Some(_), None) => true,
                        (None, _) => false,
                    }
                };
                if !ordered {
                    let equal_next =
                        !restart && !suffix.is_empty() && suffix.first() == key.get(shared);
                    return Err(c.corrupt_at(
                        at,
                        if equal_next {
                            format!("entry {i} shares more than the {shared} bytes it records with the previous key")
                        } else {
                            format!("key of entry {i} is not after the previous key: duplicate or out of order")
                        },
                    ));
                }
            }
            key.truncate(shared);
            key.extend_from_slice(suffix);
            if i == 0 {
                if let Some(first) = bounds.first_eq.filter(|f| *f != key.as_slice()) {
                    return Err(c.corrupt_at(
                        at,
                        format!(
                            "first key of the table differs from the smallest key of the properties ({} bytes)",
                            first.len()
                        ),
                    ));
                }
                if bounds.first_after.is_some_and(|p| key.as_slice() <= p) {
                    return Err(
                        c.corrupt_at(at, "first key is not after the previous block's last key")
                    );
                }
            }
            pos = raw.end();
            i += 1;
        }
        if i.div_ceil(interval) != count {
            return Err(c.corrupt_at(
                n - 4,
                format!(
                    "{count} restart points for {i} entries at a restart interval of {interval}"
                ),
            ));
        }
        if bounds.last_eq.is_some_and(|l| l != key.as_slice()) {
            return Err(c.corrupt_at(
                restarts_at,
                "last key of the block differs from its index key",
            ));
        }
        let Payload { buf, range, .. } = payload;
        Ok(Block {
            start: range.start,
            buf,
            restarts_at,
            restart_count: count,
            entry_count: i,
            offset,
        })
    }

    /// The number of entries.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// The uncompressed payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.restarts_at + 4 * self.restart_count + 4
    }

    /// The bytes of memory the block holds: what a cache should charge for it.
    pub fn charge(&self) -> usize {
        self.buf.capacity() + std::mem::size_of::<Self>()
    }

    /// The file offset of the block's frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn payload(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// The entries of the payload.
    #[inline]
    fn entries(&self) -> &[u8] {
        let p = self.payload();
        &p[..self.restarts_at.min(p.len())]
    }

    /// The value of entry `f` (empty if out of range, which a checked block never is).
    #[inline]
    pub(crate) fn value(&self, f: Found) -> &[u8] {
        let at = f.value_at as usize;
        self.entries()
            .get(at..at + f.value_len as usize)
            .unwrap_or_default()
    }

    /// The error for [`Next::Broken`] at payload position `pos`.
    #[cold]
    pub(crate) fn broken(&self, file: &str, pos: usize) -> FormatError {
        FormatError::Corrupt {
            file: file.to_owned(),
            offset: self.offset,
            reason: format!("data block entry at payload byte {pos} is malformed"),
        }
    }

    /// Decodes the entry at payload position `pos` into `key` (which holds the previous key of
    /// the block, or anything at a restart point).
    #[inline]
    pub(crate) fn next_at(&self, pos: usize, key: &mut Vec<u8>) -> Next {
        let entries = self.entries();
        if pos >= entries.len() {
            return Next::End;
        }
        match RawEntry::at(entries, pos) {
            Some(raw) if raw.shared <= key.len() => {
                key.truncate(raw.shared);
                key.extend_from_slice(&entries[raw.suffix_at..raw.value_at()]);
                Next::Entry(Found {
                    kind: raw.kind,
                    value_at: raw.value_at() as u32,
                    value_len: raw.value_len as u32,
                    next: raw.end() as u32,
                })
            }
            _ => Next::Broken(pos),
        }
    }

    fn restart_offset(&self, r: usize) -> usize {
        let at = self.restarts_at + 4 * r;
        self.payload()
            .get(at..at + 4)
            .map_or(usize::MAX, |b| u32::from_le_bytes(read4(b, 0)) as usize)
    }

    /// The whole key of the entry at restart point `r` (nothing shared there).
    fn restart_key(&self, r: usize) -> Option<&[u8]> {
        let entries = self.entries();
        let raw = RawEntry::at(entries, self.restart_offset(r))?;
        entries.get(raw.suffix_at..raw.value_at())
    }

    /// Finds the first entry whose key is at least `target`, leaving its key in `key`;
    /// [`Next::End`] if every key of the block is smaller.
    pub(crate) fn seek(&self, target: &[u8], key: &mut Vec<u8>) -> Next {
        // The last restart point whose key is at most the target: the first entry at or after
        // the target lies in its run (or is the first entry of the block).
        let (mut lo, mut hi) = (0usize, self.restart_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(k) = self.restart_key(mid) else {
                return Next::Broken(self.restart_offset(mid));
            };
            if k <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut pos = self.restart_offset(lo.saturating_sub(1));
        key.clear();
        loop {
            match self.next_at(pos, key) {
                Next::Entry(f) if key.as_slice() < target => pos = f.next as usize,
                other => return other,
            }
        }
    }

    /// The entry with key `target`, if the block holds it.
    pub(crate) fn get(
        &self,
        target: &[u8],
        key: &mut Vec<u8>,
        file: &str,
    ) -> Result<Option<Found>, FormatError> {
        match self.seek(target, key) {
            Next::Entry(f) => Ok((key.as_slice() == target).then_some(f)),
            Next::End => Ok(None),
            Next::Broken(pos) => Err(self.broken(file, pos)),
        }
    }
}

fn read4(bytes: &[u8], at: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    if let Some(b) = bytes.get(at..at + 4) {
        out.copy_from_slice(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: Vec<u8>) -> Payload {
        Payload {
            range: 0..bytes.len(),
            buf: bytes,
            crc: 0,
            compressed: false,
        }
    }

    fn build(entries: &[(&[u8], EntryKind, &[u8])], interval: usize) -> Vec<u8> {
        let mut b = BlockBuilder::new(interval);
        for (k, kind, v) in entries {
            b.add(k, *kind, v);
        }
        let out = b.finish().to_vec();
        assert_eq!(out.len(), {
            let mut b2 = BlockBuilder::new(interval);
            for (k, kind, v) in entries {
                b2.add(k, *kind, v);
            }
            b2.len()
        });
        out
    }

    fn decode(bytes: Vec<u8>, interval: usize) -> Result<Block, FormatError> {
        Block::decode(payload(bytes), interval, "t", 100, Bounds::default())
    }

    const ENTRIES: [(&[u8], EntryKind, &[u8]); 5] = [
        (b"apple", EntryKind::Put, b"1"),
        (b"apricot", EntryKind::Merge, b"22"),
        (b"banana", EntryKind::Delete, b""),
        (b"band", EntryKind::Put, b""),
        (b"bandana", EntryKind::Put, b"5555"),
    ];

    #[test]
    fn keys_are_prefix_compressed_with_restart_points() {
        let bytes = build(&ENTRIES, 2);
        // apple: restart, whole key; apricot shares "ap"; banana: restart; band shares "ban".
        assert_eq!(&bytes[..3], &[0, 5, 4]);
        assert_eq!(&bytes[3..9], b"apple1");
        assert_eq!(&bytes[9..12], &[2, 5, 2 << 2 | 2]);
        let count = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        assert_eq!(count, 3);
        let block = decode(bytes, 2).unwrap();
        assert_eq!(block.entry_count(), 5);
        let mut key = Vec::new();
        let mut pos = 0;
        let mut seen = Vec::new();
        while let Next::Entry(f) = block.next_at(pos, &mut key) {
            seen.push((key.clone(), f.kind, block.value(f).to_vec()));
            pos = f.next as usize;
        }
        let expected: Vec<_> = ENTRIES
            .iter()
            .map(|(k, kind, v)| (k.to_vec(), *kind, v.to_vec()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn seek_and_get_find_every_key_and_no_other() {
        for interval in [1, 2, 3, 16] {
            let block = decode(build(&ENTRIES, interval), interval).unwrap();
            let mut key = Vec::new();
            for (k, kind, v) in ENTRIES {
                let f = block.get(k, &mut key, "t").unwrap().unwrap();
                assert_eq!((f.kind, block.value(f)), (kind, v));
            }
            for (probe, next) in [
                (&b""[..], Some(&b"apple"[..])),
                (b"apple\0", Some(b"apricot")),
                (b"b", Some(b"banana")),
                (b"bandanas", None),
                (b"zzz", None),
            ] {
                assert!(block.get(probe, &mut key, "t").unwrap().is_none());
                let found = match block.seek(probe, &mut key) {
                    Next::Entry(_) => Some(key.as_slice()),
                    Next::End => None,
                    Next::Broken(p) => panic!("broken at {p}"),
                };
                assert_eq!(found, next, "{probe:?} / {interval}");
            }
        }
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let good = build(&ENTRIES, 2);
        assert!(decode(good.clone(), 2).is_ok());
        // A different restart interval than the one the block was built with.
        let err = decode(good.clone(), 3).unwrap_err();
        assert!(err.to_string().contains("restart"), "{err}");
        // Too short, no restarts, too many restarts.
        for (bytes, needle) in [
            (vec![0, 0], "no room"),
            (vec![0, 0, 0, 0], "without restart points"),
            (vec![9, 0, 0, 0], "do not fit"),
        ] {
            let err = decode(bytes, 2).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        // A shared prefix shorter than the longest one (a non-canonical encoding of "ab",
        // "ac": the second entry shares nothing).
        let mut bytes = vec![0, 2, 4, b'a', b'b', b'1', 0, 2, 0, b'a', b'c'];
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        let err = decode(bytes, 16).unwrap_err();
        assert!(
            err.to_string().contains("shares more than the 0 bytes"),
            "{err}"
        );
        // Keys out of order.
        let mut b = BlockBuilder::new(16);
        b.add(b"b", EntryKind::Put, b"");
        b.add(b"a", EntryKind::Put, b"");
        let err = decode(b.finish().to_vec(), 16).unwrap_err();
        assert!(err.to_string().contains("not after"), "{err}");
        // A delete with a value, an unknown kind.
        let mut bytes = good.clone();
        bytes[2] = 1 << 2 | 1;
        let err = decode(bytes, 2).unwrap_err();
        assert!(err.to_string().contains("delete entry 0"), "{err}");
        let mut bytes = good.clone();
        bytes[2] = 1 << 2 | 3;
        let err = decode(bytes, 2).unwrap_err();
        assert!(err.to_string().contains("unknown entry kind 3"), "{err}");
        // A restart entry that shares bytes; a shared length past the previous key.
        let mut bytes = good.clone();
        bytes[0] = 1;
        assert!(decode(bytes, 2).is_err());
        let mut bytes = good.clone();
        bytes[9] = 50;
        let err = decode(bytes, 2).unwrap_err();
        assert!(err.to_string().contains("shares 50 bytes"), "{err}");
        // The last key checked against the index, the first against the previous block.
        let bounds = Bounds {
            last_eq: Some(b"bandana"),
            first_after: Some(b"a"),
            first_eq: Some(b"apple"),
        };
        assert!(Block::decode(payload(good.clone()), 2, "t", 0, bounds).is_ok());
        for bounds in [
            Bounds {
                last_eq: Some(b"bandanas"),
                ..bounds
            },
            Bounds {
                first_after: Some(b"apple"),
                ..bounds
            },
            Bounds {
                first_eq: Some(b"appl"),
                ..bounds
            },
        ] {
            assert!(Block::decode(payload(good.clone()), 2, "t", 0, bounds).is_err());
        }
        // Every truncation of the entries (restart array kept) is an error.
        let count_len = 4 + 4 * 3;
        let entries_len = good.len() - count_len;
        for cut in 0..entries_len {
            let mut bytes = good[..cut].to_vec();
            bytes.extend_from_slice(&good[entries_len..]);
            assert!(decode(bytes, 2).is_err(), "entries cut to {cut}");
        }
    }

    #[test]
    fn an_empty_key_and_empty_values_are_entries() {
        let block = decode(
            build(
                &[(b"", EntryKind::Put, b""), (b"\0", EntryKind::Delete, b"")],
                16,
            ),
            16,
        )
        .unwrap();
        let mut key = Vec::new();
        assert!(block.get(b"", &mut key, "t").unwrap().is_some());
        assert!(block.get(b"\0", &mut key, "t").unwrap().is_some());
        assert_eq!(block.entry_count(), 2);
    }
}
