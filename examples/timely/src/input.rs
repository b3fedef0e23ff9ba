//! The deterministic input: `splits` source splits, each a sequence of records that is a pure
//! function of (seed, split, offset), so a source replays from any checkpointed offset. Every
//! split emits `records` records per epoch: the records of epoch `e` are offsets
//! `e * records .. (e + 1) * records` of every split, and a record's event time is its offset.

use serde::{Deserialize, Serialize};

/// What the job is run on; the same in every run of a job (a failure-free run, a crashed run
/// and its restarts), whatever the number of workers and processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// Seed of the records.
    pub seed: u64,
    /// Number of source splits.
    pub splits: u32,
    /// Records per split and epoch.
    pub records: u64,
    /// Number of epochs.
    pub epochs: u64,
    /// Number of distinct keys.
    pub keys: u64,
    /// Event-time length of the tumbling windows.
    pub window: i64,
}

/// One record: a key, a value, its event time and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key.
    pub key: u64,
    /// The value summed per window.
    pub value: i64,
    /// The event time (the record's offset in its split).
    pub time: i64,
    /// The split the record came from.
    pub split: u32,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl InputSpec {
    /// The record at `offset` of `split`.
    pub fn record(&self, split: u32, offset: u64) -> Record {
        let r = mix(self.seed ^ mix(u64::from(split) << 40 ^ offset));
        Record {
            key: r % self.keys.max(1),
            value: ((r >> 20) % 100) as i64,
            time: offset as i64,
            split,
        }
    }

    /// The records of `split` in `epoch`.
    pub fn epoch_of_split(&self, split: u32, epoch: u64) -> impl Iterator<Item = Record> + '_ {
        let start = epoch * self.records;
        (start..start + self.records).map(move |offset| self.record(split, offset))
    }

    /// The offset every split stands at before `epoch`.
    pub fn offset_before(&self, epoch: u64) -> u64 {
        epoch * self.records
    }

    /// The watermark once `epoch` is processed: every event time up to it has been seen. After
    /// the last epoch, the end of input: every window fires.
    pub fn watermark_after(&self, epoch: u64) -> i64 {
        if epoch + 1 >= self.epochs {
            i64::MAX
        } else {
            ((epoch + 1) * self.records) as i64 - 1
        }
    }

    /// The tumbling window `time` falls in: `[start, end)`.
    pub fn window_of(&self, time: i64) -> (i64, i64) {
        let start = time - time.rem_euclid(self.window);
        (start, start + self.window)
    }
}

/// The order the keyed operator processes an epoch's records in (they arrive from the splits
/// in any order): by event time, then split, then key.
pub fn processing_order(records: &mut [Record]) {
    records.sort_unstable_by_key(|r| (r.time, r.split, r.key));
}
