//! The LSM backend ([`LsmBackend`], [`Backend::Lsm`](crate::Backend::Lsm)) and its parts.
//!
//! The LSM backend keeps every state of a task in one log-structured merge tree (architecture:
//! "LSM backend"). This module holds its in-memory parts, each in the file named after the
//! concept:
//!
//! - [`key`]: the byte layout of an entry key, `state id | key group | key | namespace
//!   [| user key]`, prefix-safe so that a state, a key group, a key or a (key, namespace) is one
//!   byte range (spec/lsm-key-layout.md);
//! - [`timer_key`]: the timer layout, `state id | key group | domain | timestamp | key | namespace`,
//!   in which timer states are kept so that each key group's timers are in firing order;
//! - [`entry`]: what the tree stores under a key ([`Entry`]: a value, a tombstone or list-append
//!   merge operands) and what a point read finds ([`Lookup`]);
//! - [`mem_table`]: the [`MemTable`] the task thread writes into, and the [`ImmutableMemTable`]
//!   it becomes when full (`Send + Sync`, read by flushes and iterators on other threads);
//! - [`merge`]: resolving a key across sources, newest first ([`resolve`]), and the k-way
//!   [`MergingIter`] that flushes, compactions and range reads are built on; the list-append
//!   merge operator ([`merge::push_list_element`], [`merge::ListElements`]).
//!
//! - [`tree`]: the [`Tree`] over a [`Storage`](crate::Storage) directory: memtables, flushes
//!   into L0 tables (running beside compactions), versions of tables in levels recorded in a
//!   manifest, leveled compaction, range deletion, bulk ingestion of tables written by a
//!   [`TableWriter`], tables read through memory maps, and statistics (spec/lsm-tree.md).
//!
//! - [`ranges`]: normalized sets of range tombstones (deleted key ranges) and the memtable's
//!   [`ranges::RangeSet`];
//! - [`cache`]: the [`ShardedBlockCache`] of data blocks shared by tables (and trees);
//! - [`pool`]: the [`LsmPool`] of threads that flush and compact trees;
//! - [`backend`]: the [`LsmBackend`] that puts the five state types on a tree behind
//!   [`KeyedStateBackend`](crate::KeyedStateBackend).
//!
//! Incremental checkpoints share a tree's table files between checkpoints (`checkpoint`,
//! `native_restore`, spec/checkpoint-protocol.md).
//!
//! ```
//! use flowstate::lsm::{key, merge, Entry, Lookup, MemTable, MergeLevel, MergingIter};
//! use flowstate::StateId;
//!
//! let mut k = Vec::new();
//! key::encode_state_key(&mut k, StateId(3), 17, b"\x05alice", b"");
//!
//! // An older, frozen memtable holds a list of one element; the live one appends another.
//! let mut old = MemTable::new();
//! let mut list = Vec::new();
//! merge::push_list_element(&mut list, b"a");
//! old.put(&k, &list)?;
//! let old = old.freeze();
//!
//! let mut live = MemTable::new();
//! let mut operand = Vec::new();
//! merge::push_list_element(&mut operand, b"b");
//! live.merge(&k, &operand)?;
//! assert!(matches!(live.get(&k), Lookup::MergeOperands(_)));
//!
//! // A point read resolves newest first; a merged scan yields the same.
//! let value = merge::resolve([Ok(live.get(&k)), Ok(old.get(&k))])?.expect("a list");
//! let elements: Vec<&[u8]> = merge::ListElements::new(&value).collect::<Result<_, _>>()?;
//! assert_eq!(elements, [&b"a"[..], &b"b"[..]]);
//!
//! let scan = MergingIter::new(vec![live.entries(), old.entries()], MergeLevel::Bottom);
//! let all: Vec<(Vec<u8>, Entry)> = scan.collect::<Result<_, _>>()?;
//! assert_eq!(all, vec![(k.clone(), Entry::Put(value.into_owned()))]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arena;
pub mod backend;
mod btree;
pub mod cache;
mod checkpoint;
pub mod config;
pub mod entry;
pub mod key;
pub mod mem_table;
pub mod merge;
pub mod native_restore;
pub mod pool;
pub mod ranges;
pub mod timer_key;
pub mod tree;
mod ttl_compaction;

pub use backend::{LsmBackend, LsmStats};
pub use cache::{CacheStats, ShardedBlockCache};
pub use config::{LsmBackground, LsmConfig};
pub use entry::{Entry, EntryRef, Lookup};
pub use flowstate_formats::table::RangeTombstone;
pub use mem_table::{ImmutableMemTable, MemTable};
pub use merge::{resolve, MergeLevel, MergingIter};
pub use pool::LsmPool;
pub use tree::{
    CheckpointAwareOptions, CompactionPolicy, Ingested, TableWriter, Tree, TreeOptions,
    TreeSnapshot, TreeStats, Version,
};
