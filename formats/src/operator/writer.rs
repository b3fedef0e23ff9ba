//! Writes an operator-state file, one state at a time.

use std::collections::HashSet;
use std::io::Write;

use crate::checkpoint::FileOrigin;
use crate::codec::{checksum, varint};
use crate::limits::MAX_BLOCK_LEN;
use crate::record::{put_bytes, put_str};
use crate::FormatError;

use super::{OperatorStateMeta, FOOTER_LEN, HEADER_LEN, MAGIC, VERSION};

/// The most bytes of elements a state may have: the block limit less room for the fields before
/// them (a name and two codec records of at most 65 542 bytes each, a mode, a count).
const MAX_ELEMENTS_LEN: usize = MAX_BLOCK_LEN as usize - (1 << 18);

/// What a finished operator-state file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorStateSummary {
    /// The file's length in bytes.
    pub len: u64,
    /// The number of states.
    pub state_count: u32,
}

/// Writes an operator-state file to `W`: the header on creation, a block per state, the
/// footer on [`finish`](OperatorStateWriter::finish).
///
/// A call that breaks a rule (a duplicate name, a list written as a map, unsorted map keys, a
/// state over [`MAX_BLOCK_LEN`] bytes) fails without writing anything and leaves the writer
/// usable; after an I/O error the writer refuses further calls. Layout: see
/// [the module](super).
pub struct OperatorStateWriter<W: Write> {
    out: W,
    file: String,
    pos: u64,
    names: HashSet<String>,
    payload: Vec<u8>,
    elements: Vec<u8>,
    failed: bool,
}

impl<W: Write> std::fmt::Debug for OperatorStateWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorStateWriter")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("states", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> OperatorStateWriter<W> {
    /// Starts a file named `file_name` (for errors) with no origin, writing its header.
    pub fn new(out: W, file_name: &str) -> Result<Self, FormatError> {
        Self::with_origin(out, file_name, None)
    }

    /// Starts a file named `file_name` (for errors) that records `origin` (what checkpoint or
    /// savepoint it belongs to, spec/formats.md section 4.9), writing its header and origin
    /// block.
    pub fn with_origin(
        out: W,
        file_name: &str,
        origin: Option<&FileOrigin>,
    ) -> Result<Self, FormatError> {
        let mut w = OperatorStateWriter {
            out,
            file: file_name.to_owned(),
            pos: 0,
            names: HashSet::new(),
            payload: Vec::new(),
            elements: Vec::new(),
            failed: false,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&VERSION.to_le_bytes());
        w.write(&header)?;
        let mut block = vec![0u8; 4];
        FileOrigin::encode(origin, &mut block);
        let len = (block.len() - 4) as u32;
        block[..4].copy_from_slice(&len.to_le_bytes());
        let crc = checksum::crc32(&block);
        block.extend_from_slice(&crc.to_le_bytes());
        w.write(&block)?;
        Ok(w)
    }

    fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::InvalidInput {
            file: self.file.clone(),
            reason: reason.into(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        if self.failed {
            return Err(self.invalid("the writer failed earlier; the file is incomplete"));
        }
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.pos += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.failed = true;
                Err(FormatError::Io {
                    file: self.file.clone(),
                    offset: self.pos,
                    source,
                })
            }
        }
    }

    fn check(&self, meta: &OperatorStateMeta, map: bool) -> Result<(), FormatError> {
        if self.failed {
            return Err(self.invalid("the writer failed earlier; the file is incomplete"));
        }
        meta.validate().map_err(|r| self.invalid(r))?;
        if meta.mode.is_map() != map {
            return Err(self.invalid(format!(
                "operator state '{}' of mode {:?} written as a {}",
                meta.name,
                meta.mode,
                if map { "map" } else { "list" }
            )));
        }
        if self.names.contains(&meta.name) {
            return Err(self.invalid(format!("operator state '{}' is written twice", meta.name)));
        }
        if self.names.len() >= u32::MAX as usize {
            return Err(self.invalid("too many operator states"));
        }
        Ok(())
    }

    /// Writes split-list or union-list state `meta` with `elements`, in order.
    pub fn write_list_state<I>(
        &mut self,
        meta: &OperatorStateMeta,
        elements: I,
    ) -> Result<(), FormatError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.check(meta, false)?;
        self.elements.clear();
        let mut count = 0u64;
        for e in elements {
            put_bytes(e.as_ref(), &mut self.elements);
            count += 1;
            self.check_size()?;
        }
        self.write_block(meta, count)
    }

    /// Writes broadcast-map state `meta` with its (key, value) pairs, which must be strictly
    /// ascending by key bytes (as a `BTreeMap` iterates).
    pub fn write_map_state<I, K, V>(
        &mut self,
        meta: &OperatorStateMeta,
        entries: I,
    ) -> Result<(), FormatError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.check(meta, true)?;
        self.elements.clear();
        let mut count = 0u64;
        let mut prev_key_at: Option<(usize, usize)> = None;
        for (k, v) in entries {
            let k = k.as_ref();
            if let Some((start, len)) = prev_key_at {
                if k <= &self.elements[start..start + len] {
                    return Err(self.invalid(format!(
                        "keys of broadcast state '{}' are not strictly ascending",
                        meta.name
                    )));
                }
            }
            let start = self.elements.len() + varint::encoded_len(k.len() as u64);
            put_bytes(k, &mut self.elements);
            prev_key_at = Some((start, k.len()));
            put_bytes(v.as_ref(), &mut self.elements);
            count += 1;
            self.check_size()?;
        }
        self.write_block(meta, count)
    }

    /// Fails once the elements would make the block larger than [`MAX_BLOCK_LEN`].
    fn check_size(&self) -> Result<(), FormatError> {
        if self.elements.len() > MAX_ELEMENTS_LEN {
            return Err(FormatError::LimitExceeded {
                file: self.file.clone(),
                offset: self.pos,
                what: "operator state length",
                value: self.elements.len() as u64,
                limit: MAX_ELEMENTS_LEN as u64,
            });
        }
        Ok(())
    }

    fn write_block(&mut self, meta: &OperatorStateMeta, count: u64) -> Result<(), FormatError> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        put_str(&meta.name, &mut payload);
        payload.push(meta.mode.code());
        meta.value.encode(&mut payload);
        if let Some(k) = &meta.key {
            k.encode(&mut payload);
        }
        varint::encode_u64(count, &mut payload);
        payload.extend_from_slice(&self.elements);
        // check_size bounded the elements, and the fields before them are small.
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(&payload);
        let crc = crc.finalize().to_le_bytes();
        let result = self
            .write(&len)
            .and_then(|()| self.write(&payload))
            .and_then(|()| self.write(&crc));
        self.payload = payload;
        result?;
        self.names.insert(meta.name.clone());
        Ok(())
    }

    /// Writes the footer, flushes the output and returns what the file holds.
    pub fn finish(mut self) -> Result<OperatorStateSummary, FormatError> {
        let count = self.names.len() as u32;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[0..4].copy_from_slice(&count.to_le_bytes());
        let crc = checksum::crc32(&footer[0..4]);
        footer[4..8].copy_from_slice(&crc.to_le_bytes());
        footer[8..12].copy_from_slice(&VERSION.to_le_bytes());
        footer[12..20].copy_from_slice(&MAGIC);
        self.write(&footer)?;
        self.out.flush().map_err(|source| FormatError::Io {
            file: self.file.clone(),
            offset: self.pos,
            source,
        })?;
        Ok(OperatorStateSummary {
            len: self.pos,
            state_count: count,
        })
    }
}
