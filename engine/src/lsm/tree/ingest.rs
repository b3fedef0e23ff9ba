//! Ingestion: tables written outside the memtable (a restore's sorted runs) added to the tree
//! as its newest data, in the deepest level that takes them (spec/lsm-tree.md, "Ingestion").

use super::*;

/// Where [`Tree::ingest`] put the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Tables that went to L0 (they overlap an ingested table kept out of L0, or an L0 table).
    pub l0_tables: usize,
    /// The level the other tables went to (0 when all went to L0).
    pub level: usize,
    /// The number of tables that went there.
    pub level_tables: usize,
}

impl Tree {
    /// Adds `tables` (from [`TableWriter::finish`]) to the tree as its newest data. In key
    /// order, a table that overlaps the previous table kept out of L0, or an L0 table, goes to
    /// L0 (later ones newer); the others, disjoint, go together into the deepest level that
    /// holds no table overlapping them, in it or in a level above (an ingest into an empty tree lands in the bottom level, where nothing
    /// compacts it again until newer data comes down). The tables must not hold a key twice.
    ///
    /// Fails with [`Error::InvalidArgument`] if a memtable holds data (it would be older than
    /// the tables, but read first): freeze and flush first. A refused ingest deletes the
    /// tables. When writing the manifest fails, the tree is unchanged in memory, but (as for a
    /// flush) the manifest on disk may already list the tables: the next open then has them.
    pub fn ingest(&self, tables: Vec<Arc<TableHandle>>) -> Result<Ingested> {
        let _flush = lock(&self.flush_lock);
        let _compact = lock(&self.compact_lock);
        let fail = |e: Error| {
            for t in &tables {
                t.obsolete.store(true, Ordering::Release);
            }
            Err(e)
        };
        if self.disposed.load(Ordering::Acquire) {
            return fail(Error::InvalidArgument(
                "ingest into a disposed tree".to_owned(),
            ));
        }
        {
            let state = lock(&self.state);
            if !state.mem.is_empty() || !state.imms.is_empty() {
                drop(state);
                return fail(Error::InvalidArgument(
                    "ingest into a tree whose memtables hold data: flush them first".to_owned(),
                ));
            }
        }
        if tables.is_empty() {
            return Ok(Ingested::default());
        }
        // In key order, a table goes deep unless it overlaps the last table that did or an L0
        // table: the deep ones are then disjoint, and the others go to L0.
        let mut sorted = tables.clone();
        sorted.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        let base = self.pin();
        let mut deep: Vec<Arc<TableHandle>> = Vec::new();
        let mut l0_ids: HashSet<u64> = HashSet::new();
        for t in sorted {
            let after_deep = deep.last().is_none_or(|d| t.smallest > d.largest);
            let over_l0 = base
                .tables(0)
                .iter()
                .any(|o| o.overlaps(&t.smallest, &t.largest));
            if after_deep && !over_l0 {
                deep.push(t);
            } else {
                l0_ids.insert(t.id);
            }
        }
        // The deepest level with no table overlapping the deep ones in it or above.
        let level_overlaps = |level: usize| {
            let tables = base.tables(level);
            deep.iter().any(|n| {
                let i = tables.partition_point(|t| t.largest < n.smallest);
                tables.get(i).is_some_and(|t| t.smallest <= n.largest)
            })
        };
        let mut level = 0;
        if !deep.is_empty() {
            for l in 1..MAX_LEVELS {
                if level_overlaps(l) {
                    break;
                }
                level = l;
            }
        }
        if level == 0 {
            l0_ids.extend(deep.drain(..).map(|t| t.id));
        }
        // L0 takes them in the caller's order (later ones newer).
        let to_l0: Vec<Arc<TableHandle>> = tables
            .iter()
            .filter(|t| l0_ids.contains(&t.id))
            .cloned()
            .collect();
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            return fail(e);
        }
        let bytes: u64 = tables.iter().map(|t| t.size).sum();
        let outcome = Ingested {
            l0_tables: to_l0.len(),
            level,
            level_tables: deep.len(),
        };
        let installed = self.install(
            |version| {
                for t in &to_l0 {
                    version.levels[0].insert(0, Arc::clone(t));
                }
                if level > 0 {
                    let out = &mut version.levels[level];
                    out.extend(deep.iter().cloned());
                    out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                }
            },
            |state| {
                state.stats.ingested_tables += tables.len() as u64;
                state.stats.ingested_bytes += bytes;
            },
        );
        // After an error here the manifest on disk may list the tables (a rename that landed
        // before a failed directory sync): their files stay, as a failed flush's do, and the
        // next open keeps them if listed and deletes them if not.
        installed.map(|()| outcome)
    }
}
