//! Reads an operator-state file through [`RandomAccess`].

use std::collections::HashSet;

use crate::checkpoint::FileOrigin;
use crate::codec::checksum;
use crate::cursor::Cursor;
use crate::limits::ReadLimits;
use crate::random_access::{read_exact, read_into, RandomAccess};
use crate::record::{CodecRecord, MAX_NAME_LEN};
use crate::FormatError;

use super::{
    OperatorState, OperatorStateData, OperatorStateMeta, OperatorStateMode, FOOTER_LEN, HEADER_LEN,
    MAGIC, MAX_ORIGIN_LEN, MIN_VERSION, VERSION,
};

/// An open operator-state file.
///
/// [`open`](OperatorStateReader::open) checks the header and the footer and walks the block
/// lengths (4 bytes per state); [`read_state`](OperatorStateReader::read_state) reads and
/// checks one state's block. Every error names the file and the byte offset; nothing read from
/// the file sizes an allocation before it has been checked against the file's length and the
/// [`ReadLimits`]. Layout: see [the module](super) and spec/formats.md section 7.
#[derive(Debug)]
pub struct OperatorStateReader<R> {
    origin: Option<FileOrigin>,
    source: R,
    file: String,
    limits: ReadLimits,
    /// (offset, payload length) of each state's block.
    blocks: Vec<(u64, u32)>,
}

impl<R: RandomAccess> OperatorStateReader<R> {
    /// Opens the operator-state file in `source`, named `file_name` in errors.
    pub fn open(source: R, file_name: &str) -> Result<Self, FormatError> {
        Self::open_with_limits(source, file_name, ReadLimits::default())
    }

    /// Opens the file with `limits` on the block size.
    ///
    /// Checks, in order: the length holds a header and a footer; the header's magic and
    /// version; the footer's magic, version and CRC; the state count against the room the
    /// blocks have; each block's length against the limit and the room left; the blocks end
    /// exactly at the footer.
    pub fn open_with_limits(
        source: R,
        file_name: &str,
        limits: ReadLimits,
    ) -> Result<Self, FormatError> {
        let file = file_name.to_owned();
        let len = source.len();
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(FormatError::TruncatedFile {
                file,
                offset: 0,
                needed: HEADER_LEN + FOOTER_LEN,
                available: len,
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact(&source, &file, 0, &mut header)?;
        if header[..8] != MAGIC {
            return Err(FormatError::BadMagic { file, offset: 0 });
        }
        let version = check_version(&header[8..12], &file)?;
        let footer_at = len - FOOTER_LEN;
        let mut footer = [0u8; FOOTER_LEN as usize];
        read_exact(&source, &file, footer_at, &mut footer)?;
        if footer[12..20] != MAGIC {
            return Err(FormatError::BadMagic {
                file,
                offset: footer_at + 12,
            });
        }
        if check_version(&footer[8..12], &file)? != version {
            return Err(FormatError::Corrupt {
                file,
                offset: footer_at + 8,
                reason: "the footer's format version differs from the header's".into(),
            });
        }
        let crc = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]);
        checksum::verify(&footer[0..4], crc, &file, footer_at)?;
        let count = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
        let corrupt = |offset: u64, reason: String| FormatError::Corrupt {
            file: file.clone(),
            offset,
            reason,
        };
        let (origin, start) = if version >= 2 {
            read_origin(&source, &file, footer_at)?
        } else {
            (None, HEADER_LEN)
        };
        // A block takes at least 8 bytes (length and CRC).
        let room = (footer_at - start) / 8;
        if u64::from(count) > room {
            return Err(corrupt(
                footer_at,
                format!(
                    "{count} states cannot fit in the {} bytes before the footer",
                    footer_at - start
                ),
            ));
        }
        let mut blocks = Vec::with_capacity(count as usize);
        let mut pos = start;
        for i in 0..count {
            if footer_at - pos < 8 {
                return Err(corrupt(
                    pos,
                    format!("state {i}'s block would run into the footer at {footer_at}"),
                ));
            }
            let mut l = [0u8; 4];
            read_exact(&source, &file, pos, &mut l)?;
            let l = u32::from_le_bytes(l);
            if l > limits.block_len() {
                return Err(FormatError::LimitExceeded {
                    file,
                    offset: pos,
                    what: "operator state length",
                    value: l.into(),
                    limit: limits.block_len().into(),
                });
            }
            if u64::from(l) > footer_at - pos - 8 {
                return Err(corrupt(
                    pos,
                    format!("state {i}'s block of {l} bytes runs into the footer at {footer_at}"),
                ));
            }
            blocks.push((pos, l));
            pos += 8 + u64::from(l);
        }
        if pos != footer_at {
            return Err(corrupt(
                pos,
                format!(
                    "{} bytes between the last state and the footer",
                    footer_at - pos
                ),
            ));
        }
        Ok(OperatorStateReader {
            origin,
            source,
            file,
            limits,
            blocks,
        })
    }

    /// The file's name, as given to [`open`](OperatorStateReader::open).
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// What the file says it belongs to (version 2 written for a checkpoint or savepoint);
    /// `None` for version 1 and for files written outside a snapshot.
    pub fn origin(&self) -> Option<&FileOrigin> {
        self.origin.as_ref()
    }

    /// The number of states in the file.
    pub fn state_count(&self) -> usize {
        self.blocks.len()
    }

    /// Reads state `index` (in the writer's order). An index past the last state is
    /// [`FormatError::InvalidInput`].
    pub fn read_state(&self, index: usize) -> Result<OperatorState, FormatError> {
        let Some(&(offset, len)) = self.blocks.get(index) else {
            return Err(FormatError::InvalidInput {
                file: self.file.clone(),
                reason: format!(
                    "state {index} does not exist: the file has {}",
                    self.blocks.len()
                ),
            });
        };
        let file = self.file.as_str();
        debug_assert!(len <= self.limits.block_len());
        let mut buf = Vec::new();
        read_into(&self.source, file, offset, 8 + u64::from(len), &mut buf)?;
        let (body, crc) = buf.split_at(buf.len() - 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        checksum::verify(body, crc, file, offset)?;
        let mut c = Cursor::new(&body[4..], file, offset + 4);
        let name = c.string(MAX_NAME_LEN, "state name length")?.to_owned();
        let mode_at = c.pos();
        let code = c.u8()?;
        let mode = OperatorStateMode::from_code(code)
            .ok_or_else(|| c.corrupt_at(mode_at, format!("unknown operator state mode {code}")))?;
        let value = CodecRecord::decode(&mut c)?;
        let key = if mode.is_map() {
            Some(CodecRecord::decode(&mut c)?)
        } else {
            None
        };
        let data = if mode.is_map() {
            let n = c.count(2, "map entry")?;
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let at = c.pos();
                let k = c.len_prefixed()?;
                let v = c.len_prefixed()?;
                if pairs.last().is_some_and(|(p, _)| k <= p.as_slice()) {
                    return Err(c.corrupt_at(
                        at,
                        "broadcast map keys are not strictly ascending: duplicate or out of order",
                    ));
                }
                pairs.push((k.to_vec(), v.to_vec()));
            }
            OperatorStateData::Map(pairs)
        } else {
            let n = c.count(1, "list element")?;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(c.len_prefixed()?.to_vec());
            }
            OperatorStateData::List(items)
        };
        c.finish("operator state")?;
        Ok(OperatorState {
            meta: OperatorStateMeta {
                name,
                mode,
                value,
                key,
            },
            data,
        })
    }

    /// Reads every state, in the writer's order; two states with one name are an error.
    pub fn read_all(&self) -> Result<Vec<OperatorState>, FormatError> {
        let mut out = Vec::with_capacity(self.blocks.len());
        let mut names = HashSet::with_capacity(self.blocks.len());
        for (i, &(offset, _)) in self.blocks.iter().enumerate() {
            let state = self.read_state(i)?;
            if !names.insert(state.meta.name.clone()) {
                return Err(FormatError::Corrupt {
                    file: self.file.clone(),
                    offset: offset + 4,
                    reason: format!("a second operator state named '{}'", state.meta.name),
                });
            }
            out.push(state);
        }
        Ok(out)
    }

    /// The source the reader reads from.
    pub fn into_source(self) -> R {
        self.source
    }
}

/// Reads the origin block right after the header (version 2): its length (at most
/// [`MAX_ORIGIN_LEN`], within the room before the footer), CRC and field. Returns the origin
/// and where the first state's block starts.
fn read_origin<R: RandomAccess>(
    source: &R,
    file: &str,
    footer_at: u64,
) -> Result<(Option<FileOrigin>, u64), FormatError> {
    let room = footer_at - HEADER_LEN;
    if room < 8 {
        return Err(FormatError::TruncatedFile {
            file: file.to_owned(),
            offset: HEADER_LEN,
            needed: 8,
            available: room,
        });
    }
    let mut l = [0u8; 4];
    read_exact(source, file, HEADER_LEN, &mut l)?;
    let len = u32::from_le_bytes(l);
    if len > MAX_ORIGIN_LEN || u64::from(len) > room - 8 {
        return Err(FormatError::Corrupt {
            file: file.to_owned(),
            offset: HEADER_LEN,
            reason: format!("origin block of {len} bytes does not fit before the footer"),
        });
    }
    let mut buf = Vec::new();
    read_into(source, file, HEADER_LEN, 8 + u64::from(len), &mut buf)?;
    let (body, crc) = buf.split_at(buf.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    checksum::verify(body, crc, file, HEADER_LEN)?;
    let mut c = Cursor::new(&body[4..], file, HEADER_LEN + 4);
    let origin = FileOrigin::decode(&mut c)?;
    c.finish("origin block")?;
    Ok((origin, HEADER_LEN + 8 + u64::from(len)))
}

/// The version in `bytes` if this code reads it.
fn check_version(bytes: &[u8], file: &str) -> Result<u32, FormatError> {
    let mut v = [0u8; 4];
    v.copy_from_slice(bytes);
    let found = u32::from_le_bytes(v);
    if (MIN_VERSION..=VERSION).contains(&found) {
        Ok(found)
    } else {
        Err(FormatError::UnsupportedVersion {
            file: file.to_owned(),
            found,
            supported: VERSION,
        })
    }
}
