//! Incremental TTL cleanup of the heap backend (spec/state-semantics.md R70): each access to
//! a state with a TTL checks a few more of its entries, walking every key group's buckets in
//! turn, and removes what has expired (whole entries, or the expired elements of a list and
//! entries of a map). Flink's heap backend does the same (`cleanupIncrementally`); without it,
//! entries that are never read again would stay in memory until a snapshot and restore.

use super::cow::Verdict;
use super::table::{Entry, StateTable};
use crate::state::ttl::Expiry;
use crate::state::ttl_filter::{live, Live};
use crate::state::{Key, StateHandle, TtlConfig};

/// Where the cleanup of one state goes on at its next step: a slot of a bucket of a key group.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CleanupCursor {
    key_group: usize,
    bucket: usize,
    slot: usize,
}

/// Checks `budget` entries of `table` from `cursor` on (at most one pass over the table),
/// removing or trimming what has expired at `now`. Entries are checked without encoding them
/// ([`StateHandle::stored_expiry`]); a bucket in which one has expired is cleaned whole (its
/// other entries checked too) and rewritten once. Returns the number of entries checked.
pub(crate) fn clean_step<K: Key, H: StateHandle>(
    table: &mut StateTable<K, H>,
    cursor: &mut CleanupCursor,
    budget: usize,
    ttl: &TtlConfig,
    now: u64,
    epoch: u32,
) -> usize {
    let groups = table.key_groups.len();
    if groups == 0 || budget == 0 {
        return 0;
    }
    let mut checked = 0;
    // Empty slots, buckets and key groups cost a step each: bound the walk, not only the
    // entries.
    let mut steps = 0;
    let max_steps = budget.saturating_mul(8).max(groups) + 1;
    while checked < budget && steps < max_steps {
        steps += 1;
        if cursor.key_group >= groups {
            *cursor = CleanupCursor::default();
        }
        let map = table.map(cursor.key_group);
        if cursor.bucket >= map.bucket_count() {
            cursor.key_group += 1;
            cursor.bucket = 0;
            cursor.slot = 0;
            continue;
        }
        let slots = map.bucket_slots(cursor.bucket);
        let mut expired = false;
        while cursor.slot < slots && checked < budget && !expired {
            if let Some(e) = map.slot_entry(cursor.bucket, cursor.slot) {
                checked += 1;
                expired = H::stored_expiry(&e.state, ttl, now) != Expiry::Nothing;
            }
            cursor.slot += 1;
            steps += 1;
        }
        if expired {
            // Whole entries removed are logged as any removal is (heap incremental
            // checkpoints): the base may hold another version of them that is still live.
            let track = table.removals.is_some();
            let mut gone = Vec::new();
            table
                .map_mut(cursor.key_group)
                .clean_bucket(cursor.bucket, |e| {
                    let verdict = judge::<K, H>(e, ttl, now);
                    if track && matches!(verdict, Verdict::Remove) {
                        gone.push((e.key.clone(), e.ns.clone()));
                    }
                    verdict
                });
            for (key, ns) in gone {
                table.log_removal(cursor.key_group, epoch, &key, &ns);
            }
            cursor.slot = slots;
        }
        if cursor.slot >= slots {
            cursor.bucket += 1;
            cursor.slot = 0;
        }
    }
    checked
}

/// What cleanup does with one entry.
fn judge<K: Key, H: StateHandle>(
    e: &Entry<K, H::Namespace, H::Stored>,
    ttl: &TtlConfig,
    now: u64,
) -> Verdict<Entry<K, H::Namespace, H::Stored>> {
    match H::stored_expiry(&e.state, ttl, now) {
        Expiry::Nothing => Verdict::Keep,
        Expiry::All => Verdict::Remove,
        // Some list elements or map entries: trimmed through the encoded form. The live part
        // decodes (it is bytes the stored state encoded to); should it not, the entry is kept
        // as it is (cleanup never loses live state).
        Expiry::Part => match live(&H::encode_stored(&e.state), ttl, now) {
            Live::Part(state) => match H::decode_stored(&state) {
                Ok(trimmed) => Verdict::Replace(Entry {
                    key: e.key.clone(),
                    ns: e.ns.clone(),
                    state: trimmed,
                }),
                Err(_) => Verdict::Keep,
            },
            Live::Nothing => Verdict::Remove,
            Live::All => Verdict::Keep,
        },
    }
}
