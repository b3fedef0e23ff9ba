//! Pieces the engine's integration tests share.

pub mod all_kinds;
#[cfg(feature = "object-store")]
pub mod object;
pub mod rng;

use flowstate::AggregateFunction;

/// Sum and count of `i64` inputs: an aggregating state's function whose accumulator, result
/// and input types differ from one another in shape.
pub struct Sum;

impl AggregateFunction for Sum {
    type In = i64;
    type Acc = (i64, u32);
    type Out = (i64, u32);
    fn create_accumulator(&self) -> (i64, u32) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, u32), v: i64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, u32)) -> (i64, u32) {
        *acc
    }
    fn merge(&self, acc: &mut (i64, u32), o: (i64, u32)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}
