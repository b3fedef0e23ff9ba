//! `flowstate lsm`: inspect and verify an LSM tree's directory or one table file, read-only.

use std::path::{Path, PathBuf};

use flowstate::lsm::tree::{MANIFEST_NAME, MAX_MANIFEST_LEN};
use flowstate::storage::{LocalStorage, ReadableFile, Storage};
use flowstate_formats::manifest::Manifest;
use flowstate_formats::table::TableReader;

use crate::json::{self, Obj};
use crate::which::ToolResult;

/// Options of `flowstate lsm`.
#[derive(clap::Args, Debug)]
pub struct LsmArgs {
    /// An LSM tree's directory (holding `MANIFEST`) or one table file (`NNNNNN.sst`).
    path: PathBuf,
    /// Read every block of every table and check checksums, order, counts and filters.
    #[arg(long)]
    verify: bool,
    /// Also print each table's range tombstones (at most this many per table).
    #[arg(long, default_value_t = 0)]
    ranges: usize,
    /// Print one JSON document on standard output instead of text.
    #[arg(long)]
    json: bool,
}

/// Bytes as a JSON string: printable ASCII as is, others as `\\xNN` (as the text shows them).
fn show_json(bytes: &[u8]) -> String {
    flowstate::codec::dynamic::json_literal(&show(bytes))
}

/// Printable bytes as text, others as `\xNN`; long keys cut after 48 bytes.
fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(48) {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > 48 {
        out.push_str(&format!("...({} bytes)", bytes.len()));
    }
    out
}

fn open_table(
    storage: &LocalStorage,
    name: &str,
) -> ToolResult<TableReader<Box<dyn ReadableFile>>> {
    let file = storage.open(name)?;
    Ok(TableReader::open(file, name)?)
}

/// Prints one table's summary (or, with `--json`, returns it as a JSON object); with
/// `verify`, reads it whole. Returns its entry count and its JSON object.
fn table(
    storage: &LocalStorage,
    name: &str,
    args: &LsmArgs,
    indent: &str,
) -> ToolResult<(u64, String)> {
    let reader = open_table(storage, name)?;
    let p = reader.properties();
    let verified = if args.verify {
        Some(reader.verify()?)
    } else {
        None
    };
    let object = Obj::new()
        .str("name", name)
        .raw("table_id", reader.table_id())
        .raw("bytes", reader.len())
        .raw("entries", p.entries)
        .raw("puts", p.puts())
        .raw("deletes", p.deletes)
        .raw("merges", p.merges)
        .raw("range_tombstones", p.range_tombstones)
        .raw("data_blocks", p.data_blocks)
        .str("compression", &format!("{:?}", p.compression))
        .raw("bloom_bits_per_key", p.bloom_bits_per_key)
        .opt_str("prefix_extractor", p.prefix_extractor.as_deref())
        .raw(
            "smallest_key",
            p.smallest_key
                .as_deref()
                .map_or_else(|| "null".into(), show_json),
        )
        .raw(
            "largest_key",
            p.largest_key
                .as_deref()
                .map_or_else(|| "null".into(), show_json),
        )
        .raw(
            "ranges",
            json::array(
                reader
                    .range_tombstones()
                    .iter()
                    .take(args.ranges)
                    .map(|r| format!("[{},{}]", show_json(&r.start), show_json(&r.end))),
            ),
        )
        .raw(
            "verified_entries",
            verified.map_or_else(|| "null".into(), |n| n.to_string()),
        )
        .end();
    if args.json {
        return Ok((p.entries, object));
    }
    println!(
        "{indent}{name}: table id {}, {} bytes, {} entries ({} puts, {} deletes, {} merges), \
         {} range tombstones, {} data blocks, {:?}, bloom {} bits/key{}",
        reader.table_id(),
        reader.len(),
        p.entries,
        p.puts(),
        p.deletes,
        p.merges,
        p.range_tombstones,
        p.data_blocks,
        p.compression,
        p.bloom_bits_per_key,
        p.prefix_extractor
            .as_deref()
            .map(|e| format!(", prefix filter {e}"))
            .unwrap_or_default(),
    );
    if let (Some(lo), Some(hi)) = (&p.smallest_key, &p.largest_key) {
        println!("{indent}  keys {} .. {}", show(lo), show(hi));
    }
    for r in reader.range_tombstones().iter().take(args.ranges) {
        println!("{indent}  range [{}, {})", show(&r.start), show(&r.end));
    }
    if let Some(n) = verified {
        println!("{indent}  verified: {n} entries");
    }
    Ok((p.entries, object))
}

/// `flowstate lsm`: a tree's levels and tables, or one table.
pub fn lsm(args: &LsmArgs) -> ToolResult<()> {
    if args.path.is_file() {
        let dir = args.path.parent().unwrap_or(Path::new("."));
        let name = args
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a file name", args.path.display()))?;
        let storage = LocalStorage::new(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
        let (_, object) = table(&storage, name, args, "")?;
        if args.json {
            println!("{object}");
            return Ok(());
        }
        if args.verify {
            println!("OK: {} verified", args.path.display());
        }
        return Ok(());
    }
    let storage = LocalStorage::new(&args.path)?;
    if !storage.exists(MANIFEST_NAME)? {
        return Err(format!(
            "{}: no {MANIFEST_NAME}: not an LSM tree directory (or one a backend disposed of)",
            args.path.display()
        )
        .into());
    }
    let bytes = storage.read_all(MANIFEST_NAME, MAX_MANIFEST_LEN)?;
    let manifest = Manifest::decode(&bytes, MANIFEST_NAME)?;
    if !args.json {
        println!(
            "{}: {} tables, next table id {}",
            args.path.display(),
            manifest.tables.len(),
            manifest.next_table_id
        );
    }
    let mut level_json = Vec::new();
    let mut entries = 0u64;
    let mut levels: Vec<u8> = manifest.tables.iter().map(|t| t.level).collect();
    levels.dedup();
    for level in levels {
        let tables: Vec<_> = manifest
            .tables
            .iter()
            .filter(|t| t.level == level)
            .collect();
        let bytes: u64 = tables.iter().map(|t| t.size).sum();
        if !args.json {
            println!("L{level}: {} tables, {bytes} bytes", tables.len());
        }
        let mut table_json = Vec::new();
        for t in &tables {
            if !args.json {
                println!(
                    "  {} ({} bytes) {} .. {}",
                    t.name,
                    t.size,
                    show(&t.smallest),
                    show(&t.largest)
                );
            }
            let (n, object) = table(&storage, &t.name, args, "    ")?;
            entries += n;
            table_json.push(object);
        }
        level_json.push(
            Obj::new()
                .raw("level", level)
                .raw("bytes", bytes)
                .raw("tables", json::array(table_json))
                .end(),
        );
    }
    if args.json {
        println!(
            "{}",
            Obj::new()
                .str("path", &args.path.display().to_string())
                .raw("next_table_id", manifest.next_table_id)
                .raw("tables", manifest.tables.len())
                .raw("entries", entries)
                .raw("verified", args.verify)
                .raw("levels", json::array(level_json))
                .end()
        );
        return Ok(());
    }
    if args.verify {
        println!(
            "OK: {} tables, {entries} entries verified",
            manifest.tables.len()
        );
    }
    Ok(())
}
