//! Expiry decided on the encoded form of a state with a TTL, where every value, list element
//! and map value starts with its timestamp ([`TtlValue`](super::TtlValue)): what full
//! snapshots leave out (R65), what `keys` and `entry_count` do not see (R63), and what
//! cleanup removes, on either backend, without decoding values.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::ttl::{encoded_timestamp, TtlConfig};
use super::StateMeta;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{Change, EncodedEntry, EncodedState, StateTableSnapshot};

/// How much of an entry's state is live.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// All of it: keep the entry as it is.
    All,
    /// Nothing: the entry is expired as a whole.
    Nothing,
    /// Some list elements or map entries: the entry with only those.
    Part(EncodedState),
}

/// Whether bytes starting with a timestamp are live at `now`. Bytes too short to hold one are
/// kept: decoding them reports the damage where it is read.
pub(crate) fn bytes_live(bytes: &[u8], ttl: &TtlConfig, now: u64) -> bool {
    encoded_timestamp(bytes).is_none_or(|ts| !ttl.is_expired(ts, now))
}

/// How much of `state` is live at `now` under `ttl`.
pub(crate) fn live(state: &EncodedState, ttl: &TtlConfig, now: u64) -> Live {
    match state {
        EncodedState::Value(v) => {
            if bytes_live(v, ttl, now) {
                Live::All
            } else {
                Live::Nothing
            }
        }
        EncodedState::List(items) => {
            let kept = items.iter().filter(|i| bytes_live(i, ttl, now)).count();
            match kept {
                0 => Live::Nothing,
                n if n == items.len() => Live::All,
                _ => Live::Part(EncodedState::List(
                    items
                        .iter()
                        .filter(|i| bytes_live(i, ttl, now))
                        .cloned()
                        .collect(),
                )),
            }
        }
        EncodedState::Map(pairs) => {
            let kept = pairs
                .iter()
                .filter(|(_, v)| bytes_live(v, ttl, now))
                .count();
            match kept {
                0 => Live::Nothing,
                n if n == pairs.len() => Live::All,
                _ => Live::Part(EncodedState::Map(
                    pairs
                        .iter()
                        .filter(|(_, v)| bytes_live(v, ttl, now))
                        .cloned()
                        .collect(),
                )),
            }
        }
    }
}

/// Whether anything of `state` is live at `now`.
pub(crate) fn any_live(state: &EncodedState, ttl: &TtlConfig, now: u64) -> bool {
    live(state, ttl, now) != Live::Nothing
}

/// A frozen view of a state with a TTL that leaves out what had expired at the snapshot's
/// instant `now` (R65): expired values, list elements and map entries; an entry left with
/// nothing live is left out whole.
pub(crate) struct TtlFilteredTable {
    inner: Arc<dyn StateTableSnapshot>,
    range: KeyGroupRange,
    ttl: TtlConfig,
    now: u64,
}

impl TtlFilteredTable {
    /// `inner`, a view of a backend owning `range`, seen at `now` under `ttl`.
    pub(crate) fn wrap(
        inner: Arc<dyn StateTableSnapshot>,
        range: KeyGroupRange,
        ttl: TtlConfig,
        now: u64,
    ) -> Arc<dyn StateTableSnapshot> {
        Arc::new(TtlFilteredTable {
            inner,
            range,
            ttl,
            now,
        })
    }
}

impl StateTableSnapshot for TtlFilteredTable {
    fn meta(&self) -> &StateMeta {
        self.inner.meta()
    }

    /// A scan of the view: only entries with something live count.
    fn entry_count(&self) -> Result<usize> {
        let mut n = 0;
        for kg in self.range.iter() {
            self.visit_key_group(kg, &mut |_| n += 1)?;
        }
        Ok(n)
    }

    fn visit_key_group(&self, key_group: u16, visit: &mut dyn FnMut(EncodedEntry)) -> Result<()> {
        let (ttl, now) = (self.ttl, self.now);
        self.inner
            .visit_key_group(key_group, &mut |mut e| match live(&e.state, &ttl, now) {
                Live::All => visit(e),
                Live::Nothing => {}
                Live::Part(state) => {
                    e.state = state;
                    visit(e);
                }
            })
    }

    fn ttl_millis(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(self.ttl.ttl_millis())
    }

    fn tracks_changes_since(&self, epoch: u32) -> bool {
        self.inner.tracks_changes_since(epoch)
    }

    /// The inner view's changes, filtered as a full snapshot is: a changed entry keeps only
    /// what is live at this view's instant, and one with nothing live is a removal. (An entry
    /// unchanged since the base keeps in the base's file what expired since: a restore hides
    /// it, R64, and the next full file leaves it out.)
    fn changes_since(
        &self,
        epoch: u32,
        key_group: u16,
        visit: &mut dyn FnMut(Change),
    ) -> Result<()> {
        let (ttl, now) = (self.ttl, self.now);
        self.inner
            .changes_since(epoch, key_group, &mut |change| match change {
                Change::Changed(mut e) => match live(&e.state, &ttl, now) {
                    Live::All => visit(Change::Changed(e)),
                    Live::Part(state) => {
                        e.state = state;
                        visit(Change::Changed(e))
                    }
                    Live::Nothing => visit(Change::Removed {
                        key: e.key,
                        namespace: e.namespace,
                    }),
                },
                removed => visit(removed),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamped(ts: u64, v: u8) -> Vec<u8> {
        let mut b = ts.to_le_bytes().to_vec();
        b.push(v);
        b
    }

    #[test]
    fn values_elements_and_map_entries_expire_one_by_one() {
        let ttl = TtlConfig::after(Duration::from_millis(10));
        let now = 100;
        assert_eq!(
            live(&EncodedState::Value(stamped(95, 1)), &ttl, now),
            Live::All
        );
        assert_eq!(
            live(&EncodedState::Value(stamped(90, 1)), &ttl, now),
            Live::Nothing
        );
        // Bytes too short for a timestamp are kept for the decoder to report.
        assert_eq!(live(&EncodedState::Value(vec![1, 2]), &ttl, now), Live::All);
        let list = EncodedState::List(vec![stamped(80, 1), stamped(99, 2), stamped(50, 3)]);
        assert_eq!(
            live(&list, &ttl, now),
            Live::Part(EncodedState::List(vec![stamped(99, 2)]))
        );
        let old = EncodedState::List(vec![stamped(80, 1)]);
        assert_eq!(live(&old, &ttl, now), Live::Nothing);
        assert!(!any_live(&old, &ttl, now));
        let map = EncodedState::Map(vec![(vec![1], stamped(99, 1)), (vec![2], stamped(1, 2))]);
        assert_eq!(
            live(&map, &ttl, now),
            Live::Part(EncodedState::Map(vec![(vec![1], stamped(99, 1))]))
        );
    }
}
