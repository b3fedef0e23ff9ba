//! The job's output lines, and the expected output computed without flowstate or timely: a
//! plain sequential model of the keyed operator over the whole input, for `check`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::input::{processing_order, InputSpec};

/// The most recent values a key keeps (its list state).
pub const RECENT: usize = 4;

/// A fired window of a key, as the job writes it: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowResult {
    /// The key.
    pub key: u64,
    /// The window's start (event time).
    pub start: i64,
    /// The sum of the key's values in the window.
    pub sum: i64,
    /// The number of the key's records in the window.
    pub n: u64,
    /// The number of the key's records up to the epoch that fired the window.
    pub count: u64,
    /// The key's last values (at most [`RECENT`]), oldest first, when the window fired.
    pub recent: Vec<i64>,
    /// The number of distinct splits the key's records came from, when the window fired.
    pub splits: usize,
}

impl WindowResult {
    /// The output line (with its newline).
    pub fn line(&self) -> String {
        let recent: Vec<String> = self.recent.iter().map(i64::to_string).collect();
        format!(
            "key={} window={} sum={} n={} count={} recent={} splits={}\n",
            self.key,
            self.start,
            self.sum,
            self.n,
            self.count,
            recent.join(","),
            self.splits
        )
    }
}

/// Per key: what the model keeps (the job's value, list and map state, and open windows).
#[derive(Default)]
struct KeyModel {
    count: u64,
    recent: Vec<i64>,
    splits: BTreeMap<u32, u64>,
    windows: BTreeMap<i64, (i64, u64)>,
}

/// Every line a correct run writes, sorted.
pub fn expected_lines(spec: &InputSpec) -> Vec<String> {
    let mut keys: BTreeMap<u64, KeyModel> = BTreeMap::new();
    let mut lines = Vec::new();
    for epoch in 0..spec.epochs {
        let mut records: Vec<_> = (0..spec.splits)
            .flat_map(|s| spec.epoch_of_split(s, epoch))
            .collect();
        processing_order(&mut records);
        for r in records {
            let k = keys.entry(r.key).or_default();
            k.count += 1;
            k.recent.push(r.value);
            if k.recent.len() > RECENT {
                k.recent.remove(0);
            }
            *k.splits.entry(r.split).or_default() += 1;
            let (start, _) = spec.window_of(r.time);
            let w = k.windows.entry(start).or_default();
            w.0 += r.value;
            w.1 += 1;
        }
        let watermark = spec.watermark_after(epoch);
        for (&key, k) in keys.iter_mut() {
            let due: Vec<i64> = k
                .windows
                .keys()
                .copied()
                .filter(|start| start + spec.window - 1 <= watermark)
                .collect();
            for start in due {
                let (sum, n) = k.windows.remove(&start).unwrap_or_default();
                lines.push(
                    WindowResult {
                        key,
                        start,
                        sum,
                        n,
                        count: k.count,
                        recent: k.recent.clone(),
                        splits: k.splits.len(),
                    }
                    .line(),
                );
            }
        }
    }
    lines.sort();
    lines
}

/// Every line of the committed files of output directory `dir`, sorted.
pub fn committed_lines(dir: &Path) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let files = flowstate::file_sink::committed_files(dir).map_err(|e| e.to_string())?;
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        lines.extend(text.lines().map(|l| format!("{l}\n")));
    }
    lines.sort();
    Ok(lines)
}
