//! Properties checked by the fuzz targets under `fuzz/`, kept in the crate so that the targets
//! and the ordinary tests that replay their corpora (engine/tests/fuzz_corpus.rs) run the very
//! same code; and the helpers the crate's own tests use to decode whole files and to forge
//! checksums.
//!
//! Each `check_*` function panics when its property fails: that is how a fuzzer learns of a
//! bug. Nothing in the engine calls them.

use crate::codec::checksum::crc32;
use crate::operator::{OperatorState, OperatorStateData, OperatorStateReader, OperatorStateWriter};
use crate::snapshot::{
    OwnedValue, SnapshotMeta, SnapshotReader, SnapshotWriter, SnapshotWriterOptions,
};
use crate::table::{
    FixedPrefix, PrefixExtractor, RangeTombstone, TableBuilder, TableEntry, TableOptions,
    TableProperties, TableReadOptions, TableReader,
};
use crate::{Compression, FormatError, ReadLimits};
use std::sync::Arc;

/// One decoded snapshot entry: key group, state index, key, namespace, value.
pub type Entry = (u16, u32, Vec<u8>, Vec<u8>, OwnedValue);

/// The name the properties give the files they decode.
pub const FILE_NAME: &str = "fuzz-input";

/// The limits the properties decode with: small, so that a fuzzer's memory stays small.
pub fn fuzz_limits() -> ReadLimits {
    ReadLimits {
        max_block_len: 1 << 20,
        max_meta_len: 1 << 20,
    }
}

/// Opens `bytes` as a snapshot and reads every key group, in order.
pub fn decode_snapshot(
    bytes: &[u8],
    limits: ReadLimits,
) -> Result<(SnapshotMeta, Vec<Entry>), FormatError> {
    let reader = SnapshotReader::open_with_limits(bytes, FILE_NAME, limits)?;
    let mut entries = Vec::new();
    reader.read_all(|kg, e| {
        entries.push((
            kg,
            e.state_index,
            e.key.to_vec(),
            e.namespace.to_vec(),
            e.value.to_owned_value(),
        ));
        Ok::<_, FormatError>(())
    })?;
    Ok((reader.meta().clone(), entries))
}

/// Writes `entries` (sorted as a reader returns them) as a snapshot of `meta`.
pub fn encode_snapshot(
    meta: &SnapshotMeta,
    entries: &[Entry],
    compression: Compression,
    block_size: usize,
) -> Result<Vec<u8>, FormatError> {
    let options = SnapshotWriterOptions {
        compression,
        block_size,
        file_name: FILE_NAME.to_owned(),
        origin: None,
        delta: None,
    };
    encode_snapshot_with(meta, entries, options)
}

/// Writes `entries` (sorted as a reader returns them) as a snapshot of `meta` with `options`.
pub fn encode_snapshot_with(
    meta: &SnapshotMeta,
    entries: &[Entry],
    options: SnapshotWriterOptions,
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    let mut w = SnapshotWriter::with_options(&mut out, meta, options)?;
    let mut open: Option<u16> = None;
    for (kg, state, key, ns, value) in entries {
        if open != Some(*kg) {
            if open.is_some() {
                w.end_key_group()?;
            }
            w.begin_key_group(*kg)?;
            open = Some(*kg);
        }
        match value.as_entry_value() {
            Some(v) => w.add_entry(*state, key, ns, v)?,
            None => w.add_removal(*state, key, ns)?,
        }
    }
    if open.is_some() {
        w.end_key_group()?;
    }
    w.finish()?;
    Ok(out)
}

fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = at.checked_add(4).and_then(|end| b.get_mut(at..end)) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn range(offset: u64, len: u64, total: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= total).then_some(start..end)
}

/// Recomputes, as far as the structure can be followed, every CRC of a snapshot file (the
/// blocks the index points at, the meta block, the index, the footer), so that damage behind
/// the checksums reaches the parser. Never panics, whatever `b` holds.
pub fn repair_snapshot_checksums(b: &mut [u8]) {
    let len = b.len();
    let Some(f) = len.checked_sub(crate::snapshot::FOOTER_LEN as usize) else {
        return;
    };
    let (Some(meta_off), Some(meta_len), Some(index_off), Some(index_len)) = (
        get_u64(b, f),
        get_u32(b, f + 8),
        get_u64(b, f + 16),
        get_u32(b, f + 24),
    ) else {
        return;
    };
    if let Some(index) = range(index_off, index_len.into(), len) {
        let slots = b[index.clone()].get(4..).unwrap_or_default().to_vec();
        for slot in slots.chunks_exact(24) {
            let (Some(off), Some(l)) = (get_u64(slot, 0), get_u64(slot, 8)) else {
                continue;
            };
            let Some(group) = range(off, l, len) else {
                continue;
            };
            let mut pos = group.start;
            while pos + 15 <= group.end {
                let Some(stored) = get_u32(b, pos + 7) else {
                    break;
                };
                let body_end = pos + 11 + stored as usize;
                if body_end + 4 > group.end {
                    break;
                }
                let crc = crc32(&b[pos..body_end]);
                put_u32(b, body_end, crc);
                pos = body_end + 4;
            }
        }
        let crc = crc32(&b[index]);
        put_u32(b, f + 28, crc);
    }
    if let Some(meta) = range(meta_off, meta_len.into(), len) {
        let crc = crc32(&b[meta]);
        put_u32(b, f + 12, crc);
    }
    let crc = crc32(&b[f..f + 40]);
    put_u32(b, f + 40, crc);
}

/// Recomputes every CRC of an operator-state file that its block lengths lead to, and the
/// footer's. Never panics, whatever `b` holds.
pub fn repair_operator_state_checksums(b: &mut [u8]) {
    let Some(f) = b.len().checked_sub(crate::operator::FOOTER_LEN as usize) else {
        return;
    };
    let mut pos = crate::operator::HEADER_LEN as usize;
    while pos + 8 <= f {
        let Some(l) = get_u32(b, pos) else { break };
        let body_end = pos + 4 + l as usize;
        if body_end + 4 > f {
            break;
        }
        let crc = crc32(&b[pos..body_end]);
        put_u32(b, body_end, crc);
        pos = body_end + 4;
    }
    let crc = crc32(&b[f..f + 4]);
    put_u32(b, f + 4, crc);
}

fn check_error(err: &FormatError, len: usize) {
    assert_eq!(
        err.file(),
        Some(FILE_NAME),
        "the error names the file: {err}"
    );
    if let Some(offset) = err.offset() {
        assert!(
            offset <= len as u64,
            "offset {offset} past the end ({len}): {err}"
        );
    }
    assert!(
        err.is_corruption(),
        "a damaged file is not a misuse or an I/O error: {err}"
    );
}

/// The property of the `snapshot_decode` fuzz target. The first byte selects a mode: bit 0
/// recomputes the checksums first ([`repair_snapshot_checksums`]) so that the parser behind
/// them is exercised. Then, on the rest:
///
/// - decoding returns a value or an error naming the file and an offset within it, never a
///   panic and never an allocation beyond the [`fuzz_limits`];
/// - what decodes re-encodes (the writer accepts everything the reader does), the re-encoding
///   decodes to the same content, and encoding twice gives the same bytes;
/// - reading key groups one at a time in descending order gives what the sequential read gave.
pub fn check_snapshot_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_snapshot_checksums(&mut bytes);
    }
    let (meta, entries) = match decode_snapshot(&bytes, fuzz_limits()) {
        Ok(decoded) => decoded,
        Err(err) => return check_error(&err, bytes.len()),
    };
    let reader = SnapshotReader::open_with_limits(&bytes[..], FILE_NAME, fuzz_limits())
        .expect("a file that decoded opens again");
    assert_eq!(reader.entry_count(), entries.len() as u64);
    let mut by_group = Vec::new();
    for kg in reader.key_group_range().rev() {
        let mut group = Vec::new();
        reader
            .read_key_group(kg, |e| {
                group.push((
                    kg,
                    e.state_index,
                    e.key.to_vec(),
                    e.namespace.to_vec(),
                    e.value.to_owned_value(),
                ));
                Ok::<_, FormatError>(())
            })
            .expect("a key group that decoded in sequence decodes alone");
        by_group.push(group);
    }
    let by_group: Vec<Entry> = by_group.into_iter().rev().flatten().collect();
    assert_eq!(
        by_group, entries,
        "random access and sequential reads agree"
    );

    let delta = reader.delta().copied();
    let encode = |compression| {
        let options = SnapshotWriterOptions {
            compression,
            block_size: 4096,
            file_name: FILE_NAME.to_owned(),
            origin: None,
            delta,
        };
        encode_snapshot_with(&meta, &entries, options)
    };
    for compression in [Compression::None, Compression::Lz4] {
        let again = encode(compression).expect("the writer accepts what the reader accepted");
        let (meta2, entries2) =
            decode_snapshot(&again, ReadLimits::default()).expect("a re-encoding decodes");
        assert_eq!(meta2, meta);
        assert_eq!(entries2, entries);
        let third = encode(compression).expect("the writer accepts what it accepted before");
        assert_eq!(third, again, "encoding is deterministic");
    }
}

/// Opens `bytes` as an operator-state file and reads every state.
pub fn decode_operator_state(
    bytes: &[u8],
    limits: ReadLimits,
) -> Result<Vec<OperatorState>, FormatError> {
    OperatorStateReader::open_with_limits(bytes, FILE_NAME, limits)?.read_all()
}

/// Writes `states`, in order, as an operator-state file with no origin.
pub fn encode_operator_state(states: &[OperatorState]) -> Result<Vec<u8>, FormatError> {
    encode_operator_state_with_origin(states, None)
}

/// Writes `states`, in order, as an operator-state file that records `origin`.
pub fn encode_operator_state_with_origin(
    states: &[OperatorState],
    origin: Option<&crate::checkpoint::FileOrigin>,
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    let mut w = OperatorStateWriter::with_origin(&mut out, FILE_NAME, origin)?;
    for s in states {
        match &s.data {
            OperatorStateData::List(items) => w.write_list_state(&s.meta, items)?,
            OperatorStateData::Map(pairs) => {
                w.write_map_state(&s.meta, pairs.iter().map(|(k, v)| (k, v)))?
            }
        }
    }
    w.finish()?;
    Ok(out)
}

/// The property of the `operator_state_decode` fuzz target. The first byte selects a mode: bit
/// 0 recomputes the checksums first ([`repair_operator_state_checksums`]). Then, on the rest:
/// decoding returns the states or an error naming the file and an offset within it, never a
/// panic; and what decodes re-encodes to exactly the same bytes (the format has one encoding
/// per content and origin) if it is of the version this code writes, or to a file of that
/// version with the same content if it is older.
pub fn check_operator_state_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_operator_state_checksums(&mut bytes);
    }
    match decode_operator_state(&bytes, fuzz_limits()) {
        Err(err) => check_error(&err, bytes.len()),
        Ok(states) => {
            let reader =
                OperatorStateReader::open_with_limits(&bytes[..], FILE_NAME, fuzz_limits())
                    .expect("a file that decoded opens again");
            let again = encode_operator_state_with_origin(&states, reader.origin())
                .expect("the writer accepts what the reader accepted");
            if bytes[8..12] == crate::operator::VERSION.to_le_bytes() {
                assert_eq!(again, bytes, "one encoding per content");
            } else {
                let decoded =
                    decode_operator_state(&again, fuzz_limits()).expect("a re-encoding decodes");
                assert_eq!(
                    decoded, states,
                    "an old version re-encodes to the same content"
                );
            }
        }
    }
}

/// Recomputes the CRC-32 trailer of a framed checkpoint file (`_metadata` or a state handle
/// standing alone): the last four bytes become the CRC of everything before them.
pub fn repair_checkpoint_checksum(b: &mut [u8]) {
    if let Some(n) = b.len().checked_sub(4) {
        let crc = crc32(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes `bytes` with a checkpoint decoder and, if that succeeds, checks that the value
/// re-encodes to exactly `bytes`; an error must name the file as [`check_error`] says.
fn checkpoint_round_trip<T>(
    bytes: &[u8],
    decode: fn(&[u8], &str) -> Result<T, FormatError>,
    encode: fn(&T, &str) -> Result<Vec<u8>, FormatError>,
) {
    match decode(bytes, FILE_NAME) {
        Err(err) => check_error(&err, bytes.len()),
        Ok(value) => {
            let again =
                encode(&value, FILE_NAME).expect("the encoder accepts what the decoder accepted");
            assert_eq!(again, bytes, "one encoding per content");
        }
    }
}

/// The property of the `metadata_decode` fuzz target. The first byte selects a mode: bit 0
/// recomputes the CRC trailer first ([`repair_checkpoint_checksum`]) so that the structural
/// checks behind it are exercised; `(mode >> 1) % 3` picks the decoder: the checkpoint
/// `_metadata`, a keyed state handle or an operator state handle standing alone. Then, on the
/// rest: decoding returns a value or an error naming the file and an offset within it, never
/// a panic and never an allocation beyond what the input can hold; and what decodes
/// re-encodes to exactly the same bytes.
pub fn check_metadata_decode(data: &[u8]) {
    use crate::checkpoint::{
        CheckpointMetadataRecord, KeyedStateHandleRecord, OperatorStateHandleRecord,
    };
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_checkpoint_checksum(&mut bytes);
    }
    match (mode >> 1) % 3 {
        0 => checkpoint_round_trip(
            &bytes,
            CheckpointMetadataRecord::decode,
            CheckpointMetadataRecord::encode,
        ),
        1 => checkpoint_round_trip(
            &bytes,
            KeyedStateHandleRecord::decode,
            KeyedStateHandleRecord::encode,
        ),
        _ => checkpoint_round_trip(
            &bytes,
            OperatorStateHandleRecord::decode,
            OperatorStateHandleRecord::encode,
        ),
    }
}

/// What a table file holds: its entries in order, its range tombstones and its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedTable {
    /// Every entry, in key order.
    pub entries: Vec<TableEntry>,
    /// The range tombstones, normalized.
    pub range_tombstones: Vec<RangeTombstone>,
    /// The properties block.
    pub properties: TableProperties,
    /// The table id of the footer.
    pub table_id: u64,
}

/// The prefix extractor a table's properties name, when it is a [`FixedPrefix`] (`fixed:<n>`,
/// n ≤ 1024): the one extractor the crate knows by name.
pub fn table_prefix_extractor(name: Option<&str>) -> Option<Arc<dyn PrefixExtractor>> {
    let n: usize = name?.strip_prefix("fixed:")?.parse().ok()?;
    let p = FixedPrefix::new(n);
    (n <= 1024 && Some(p.name()) == name).then(|| Arc::new(p) as Arc<dyn PrefixExtractor>)
}

/// Opens `bytes` as a table with `limits` and reads everything it holds: every entry (a full
/// scan, which also checks the totals of the properties), the range tombstones, the properties.
pub fn decode_table(bytes: &[u8], limits: ReadLimits) -> Result<DecodedTable, FormatError> {
    let reader = TableReader::open_with(
        bytes,
        FILE_NAME,
        TableReadOptions {
            limits,
            ..TableReadOptions::default()
        },
    )?;
    let entries = reader.iter().collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedTable {
        entries,
        range_tombstones: reader.range_tombstones().to_vec(),
        properties: reader.properties().clone(),
        table_id: reader.table_id(),
    })
}

/// Writes `table`'s entries, range tombstones and user properties with the options its
/// properties record (block size, restart interval, bloom bits, the prefix extractor if
/// [`table_prefix_extractor`] knows it), its table id, and `compression`.
pub fn encode_table(
    table: &DecodedTable,
    compression: Compression,
) -> Result<Vec<u8>, FormatError> {
    let p = &table.properties;
    let options = TableOptions {
        block_size: p.block_size as usize,
        restart_interval: p.restart_interval as usize,
        compression,
        bloom_bits_per_key: p.bloom_bits_per_key,
        prefix_extractor: table_prefix_extractor(p.prefix_extractor.as_deref()),
        table_id: table.table_id,
    };
    let mut out = Vec::new();
    let mut b = TableBuilder::new(&mut out, options, FILE_NAME)?;
    for e in &table.entries {
        b.add(&e.key, e.kind, &e.value)?;
    }
    for t in &table.range_tombstones {
        b.add_range_tombstone(&t.start, &t.end)?;
    }
    for (name, value) in &p.user_properties {
        b.add_user_property(name, value)?;
    }
    b.finish()?;
    Ok(out)
}

/// Recomputes every CRC of a table file that its frame lengths lead to (walking the frames
/// from the header to the footer), the footer's copies of the meta blocks' CRCs, and the
/// footer's own, so that damage behind the checksums reaches the parser. Never panics, whatever
/// `b` holds.
pub fn repair_table_checksums(b: &mut [u8]) {
    let Some(f) = b.len().checked_sub(crate::table::FOOTER_LEN as usize) else {
        return;
    };
    let table_id = get_u64(b, f + 64).unwrap_or_default();
    let mut pos = crate::table::HEADER_LEN as usize;
    while pos + 14 <= f {
        let Some(stored) = get_u32(b, pos + 6) else {
            break;
        };
        let Some(end) = (pos + 10).checked_add(stored as usize) else {
            break;
        };
        if end + 4 > f {
            break;
        }
        let crc =
            crate::table::frame_crc(table_id, pos as u64, &b[pos..pos + 10], &b[pos + 10..end]);
        put_u32(b, end, crc);
        pos = end + 4;
    }
    for i in 0..4 {
        let at = f + 16 * i;
        let (Some(off), Some(len)) = (get_u64(b, at), get_u32(b, at + 8)) else {
            continue;
        };
        if let Some(r) = range(off, len.into(), f) {
            if r.len() >= 4 {
                if let Some(crc) = get_u32(b, r.end - 4) {
                    put_u32(b, at + 12, crc);
                }
            }
        }
    }
    let crc = crc32(&b[f..f + 72]);
    put_u32(b, f + 72, crc);
}

/// The most bytes of keys and values [`check_table_decode`] collects and re-encodes; a table
/// holding more (prefix compression lets a small file stand for long keys) is only scanned.
const TABLE_CONTENT_BUDGET: u64 = 16 << 20;

/// The property of the `table_decode` fuzz target. The first byte selects a mode: bit 0
/// recomputes the checksums first ([`repair_table_checksums`]) so that the parser behind them
/// is exercised. Then, on the rest:
///
/// - opening and [`TableReader::verify`] (a full scan that also checks the filter) return the
///   content or an error naming the file and an offset within it, never a panic and never an
///   allocation beyond the [`fuzz_limits`];
/// - what decodes answers consistently: `get` of every key (sampled) returns its entry, `get`
///   of keys between entries returns what the entries say, `iter_from` and `iter_prefix`
///   return the matching part of the full scan, the filter never rules out a key or prefix the
///   table holds;
/// - what decodes re-encodes (the builder accepts everything the reader does) to a table with
///   the same content, and encoding twice gives the same bytes.
pub fn check_table_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_table_checksums(&mut bytes);
    }
    let options = |prefix_extractor| TableReadOptions {
        limits: fuzz_limits(),
        prefix_extractor,
        ..TableReadOptions::default()
    };
    let reader = match TableReader::open_with(&bytes[..], FILE_NAME, options(None)) {
        Ok(r) => r,
        Err(err) => return check_error(&err, bytes.len()),
    };
    let extractor = table_prefix_extractor(reader.properties().prefix_extractor.as_deref());
    let reader = TableReader::open_with(&bytes[..], FILE_NAME, options(extractor.clone()))
        .expect("a table that opened opens again");
    if let Err(err) = reader.verify() {
        return check_error(&err, bytes.len());
    }
    // The size of the content, without copies.
    let mut it = reader.iter();
    let mut size = 0u64;
    while it.advance().expect("a verified table scans again") {
        size += (it.key().len() + it.value().len()) as u64;
    }
    if size > TABLE_CONTENT_BUDGET {
        return;
    }
    let entries: Vec<TableEntry> = reader
        .iter()
        .collect::<Result<_, _>>()
        .expect("a verified table scans again");
    assert_eq!(entries.len() as u64, reader.properties().entries);
    let model = |key: &[u8]| {
        entries
            .binary_search_by(|e| e.key.as_slice().cmp(key))
            .ok()
            .map(|i| (entries[i].kind, entries[i].value.clone()))
    };
    let step = (entries.len() / 32).max(1);
    for (i, e) in entries.iter().enumerate().step_by(step) {
        assert!(
            reader.may_contain(&e.key),
            "the filter rules out a key it holds"
        );
        let got = reader.get(&e.key).expect("get of a key the scan returned");
        assert_eq!(
            got,
            Some((e.kind, e.value.clone())),
            "get agrees with the scan"
        );
        let mut after = e.key.clone();
        after.push(0);
        assert_eq!(reader.get(&after).expect("get after a key"), model(&after));
        let from: Vec<TableEntry> = reader
            .iter_from(&e.key)
            .take(3)
            .collect::<Result<_, _>>()
            .expect("iter_from a key the scan returned");
        assert_eq!(
            from,
            entries[i..(i + 3).min(entries.len())],
            "iter_from agrees"
        );
        let mut prefixes = vec![e.key[..e.key.len().min(2)].to_vec()];
        if let Some(n) = extractor.as_ref().and_then(|p| p.prefix_len(&e.key)) {
            assert!(
                reader.may_contain_prefix(&e.key[..n]),
                "the filter rules out a prefix it holds"
            );
            prefixes.push(e.key[..n].to_vec());
        }
        for p in prefixes {
            let scanned: Vec<TableEntry> = reader
                .iter_prefix(&p)
                .collect::<Result<_, _>>()
                .expect("iter_prefix");
            let expected: Vec<TableEntry> = entries
                .iter()
                .filter(|e| e.key.starts_with(&p))
                .cloned()
                .collect();
            assert_eq!(scanned, expected, "iter_prefix agrees with the scan");
        }
    }
    for t in reader.range_tombstones() {
        assert!(reader.covering_tombstone(&t.start) == Some(t));
        assert!(reader.covering_tombstone(&t.end) != Some(t));
    }
    let decoded = DecodedTable {
        entries,
        range_tombstones: reader.range_tombstones().to_vec(),
        properties: reader.properties().clone(),
        table_id: reader.table_id(),
    };
    for compression in [Compression::None, Compression::Lz4] {
        let again = encode_table(&decoded, compression)
            .expect("the builder accepts what the reader accepted");
        let back = decode_table(&again, ReadLimits::default()).expect("a re-encoding decodes");
        assert_eq!(back.entries, decoded.entries);
        assert_eq!(back.range_tombstones, decoded.range_tombstones);
        assert_eq!(
            back.properties.user_properties,
            decoded.properties.user_properties
        );
        let third = encode_table(&decoded, compression)
            .expect("the builder accepts what it accepted before");
        assert_eq!(third, again, "encoding is deterministic");
    }
}

/// Makes a manifest's framing consistent so that damage behind it reaches the body parser:
/// with `length`, the body length field (bytes 12..16) becomes the length the file holds; then
/// the CRC trailer becomes the CRC-32 of everything before it. Never panics, whatever `b`
/// holds (a file too short for a header and a CRC is left as it is).
pub fn repair_manifest_framing(b: &mut [u8], length: bool) {
    let Some(crc_at) = b.len().checked_sub(4) else {
        return;
    };
    if length && crc_at >= 16 {
        let body = u32::try_from(crc_at - 16).unwrap_or(u32::MAX);
        put_u32(b, 12, body);
    }
    let crc = crc32fast::hash(&b[..crc_at]);
    b[crc_at..].copy_from_slice(&crc.to_le_bytes());
}

/// The property of the `manifest_decode` fuzz target. The first byte selects a mode: bit 0
/// recomputes the CRC trailer first, and bit 1 also the body length
/// ([`repair_manifest_framing`]), so that the body's parser is exercised. Then, on the rest:
/// decoding returns a manifest or an error naming the file and an offset within it, never a
/// panic and never an allocation beyond what the input can hold; a manifest obeys the rules
/// the decoder states (levels, distinct ids below `next_table_id`, names that are one path
/// component, smallest ≤ largest) and re-encodes to exactly the same bytes.
pub fn check_manifest_decode(data: &[u8]) {
    use crate::manifest::{Manifest, MAX_LEVEL};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_manifest_framing(&mut bytes, mode & 2 == 2);
    }
    match Manifest::decode(&bytes, FILE_NAME) {
        Err(err) => check_error(&err, bytes.len()),
        Ok(manifest) => {
            let mut ids = std::collections::BTreeSet::new();
            for t in &manifest.tables {
                assert!(t.level <= MAX_LEVEL, "level {} accepted", t.level);
                assert!(t.id < manifest.next_table_id, "id {} accepted", t.id);
                assert!(ids.insert(t.id), "id {} accepted twice", t.id);
                assert!(
                    !t.name.is_empty() && !t.name.contains('/') && t.name != "." && t.name != "..",
                    "name {:?} accepted",
                    t.name
                );
                assert!(t.smallest <= t.largest, "inverted key range accepted");
            }
            assert_eq!(manifest.encode(), bytes, "one encoding per content");
        }
    }
}
