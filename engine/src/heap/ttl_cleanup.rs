//! Incremental TTL cleanup of the heap backend (spec/state-semantics.md R70): each access to
//! a state with a TTL checks a few more of its entries, walking every key group's buckets in
//! turn, and removes what has expired (whole entries, or the expired elements of a list and
//! entries of a map). Flink's heap backend does the same (`cleanupIncrementally`); without it,
//! entries that are never read again would stay in memory until a snapshot and restore.

use super::cow::Verdict;
use super::table::{Entry, StateTable};
use crate::state::ttl_filter::{live, Live};
use crate::state::{Key, StateHandle, TtlConfig};

/// Where the cleanup of one state goes on at its next step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CleanupCursor {
    key_group: usize,
    bucket: usize,
}

/// Checks at least `budget` entries of `table` from `cursor` on (whole buckets, so a few more
/// at most; at most one pass over the table), removing or trimming what has expired at `now`.
/// Returns the number of entries checked.
pub(crate) fn clean_step<K: Key, H: StateHandle>(
    table: &mut StateTable<K, H>,
    cursor: &mut CleanupCursor,
    budget: usize,
    ttl: &TtlConfig,
    now: u64,
) -> usize {
    let groups = table.key_groups.len();
    if groups == 0 || budget == 0 {
        return 0;
    }
    let mut checked = 0;
    // Empty buckets and key groups cost a step each: bound the walk, not only the entries.
    let mut steps = 0;
    let max_steps = budget.saturating_mul(4).max(groups) + 1;
    while checked < budget && steps < max_steps {
        steps += 1;
        if cursor.key_group >= groups {
            *cursor = CleanupCursor::default();
        }
        if cursor.bucket >= table.map(cursor.key_group).bucket_count() {
            cursor.key_group += 1;
            cursor.bucket = 0;
            continue;
        }
        // Look before writing: a bucket with nothing expired is not copied away from a
        // snapshot that shares it.
        let any_expired = table
            .map(cursor.key_group)
            .bucket_iter(cursor.bucket)
            .any(|e| !matches!(live(&H::encode_stored(&e.state), ttl, now), Live::All));
        if any_expired {
            checked += table
                .map_mut(cursor.key_group)
                .clean_bucket(cursor.bucket, |e| judge::<K, H>(e, ttl, now));
        } else {
            checked += table
                .map(cursor.key_group)
                .bucket_iter(cursor.bucket)
                .count();
        }
        cursor.bucket += 1;
    }
    checked
}

/// What cleanup does with one entry.
fn judge<K: Key, H: StateHandle>(
    e: &Entry<K, H::Namespace, H::Stored>,
    ttl: &TtlConfig,
    now: u64,
) -> Verdict<Entry<K, H::Namespace, H::Stored>> {
    match live(&H::encode_stored(&e.state), ttl, now) {
        Live::All => Verdict::Keep,
        Live::Nothing => Verdict::Remove,
        // The live part decodes: it is the same bytes the stored state encoded to. Should it
        // not, the entry is kept as it is (cleanup never loses live state).
        Live::Part(state) => match H::decode_stored(&state) {
            Ok(trimmed) => Verdict::Replace(Entry {
                key: e.key.clone(),
                ns: e.ns.clone(),
                state: trimmed,
            }),
            Err(_) => Verdict::Keep,
        },
    }
}
