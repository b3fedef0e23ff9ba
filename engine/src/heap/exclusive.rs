//! The two `unsafe` sites of the heap backend, kept together (spec/unsafe.md lists them).
//!
//! Both remove checks from the per-record path that a benchmark showed to cost a large share
//! of a small-value `get` or `update` (benches/README.md, "unsafe on the hot path"):
//!
//! - [`exclusive`]: write access to the contents of an `Arc` that only the caller holds,
//!   decided by plain loads of the counters instead of the compare-and-swap that
//!   `Arc::get_mut` and `Arc::make_mut` perform (three such atomic read-modify-writes per
//!   update otherwise);
//! - [`downcast`] / [`downcast_mut`]: a table's concrete type checked against a `TypeId`
//!   stored at registration, instead of two virtual calls (`as_any`, `type_id`).

use std::any::{Any, TypeId};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// Whether `arc` is the only reference to its allocation (no other `Arc`, no `Weak`).
///
/// Plain loads: no read-modify-write. The answer stays true while the caller holds
/// `&mut arc`, since nothing else can clone it.
#[inline]
pub(crate) fn is_unique<T: ?Sized>(arc: &Arc<T>) -> bool {
    Arc::strong_count(arc) == 1 && Arc::weak_count(arc) == 0
}

/// The contents of `arc` for writing, if `arc` is the only reference to them.
#[inline]
pub(crate) fn unique_mut<T: ?Sized>(arc: &mut Arc<T>) -> Option<&mut T> {
    if is_unique(arc) {
        // Synchronizes with the release decrement of a snapshot thread that dropped its
        // reference, so that its reads happen before our writes (as `Arc::get_mut` does).
        fence(Ordering::Acquire);
        // SAFETY: the strong count is 1 and there is no weak reference, so `arc` is the only
        // pointer to the allocation. We hold `&mut arc`, so no other thread can clone it while
        // the returned borrow lives: the count cannot rise, and the returned `&mut T` is the only
        // reference to the data. `Arc::as_ptr` derives the pointer from the allocation without
        // creating a shared reference to it.
        Some(unsafe { &mut *(Arc::as_ptr(arc) as *mut T) })
    } else {
        None
    }
}

/// The contents of `arc` for writing, without looking at its reference counts.
///
/// Reading the counters costs a cache miss when the data is large and accessed at random (the
/// counters sit at the start of the allocation, the data wanted further on); callers that
/// track uniqueness themselves use this instead of [`unique_mut`].
///
/// # Safety
///
/// `arc` must be the only reference to its allocation (strong count 1, no weak reference), and
/// the last reference dropped by another thread must have been dropped before a fence or a
/// synchronizing operation on this thread (for the heap backend: the table that holds the
/// bucket was made exclusive through [`exclusive`], which fences).
#[inline]
pub(crate) unsafe fn assume_unique_mut<T: ?Sized>(arc: &mut Arc<T>) -> &mut T {
    debug_assert!(is_unique(arc), "assume_unique_mut on a shared Arc");
    // SAFETY: the caller guarantees that `arc` is the only reference; see `unique_mut`.
    unsafe { &mut *(Arc::as_ptr(arc) as *mut T) }
}

/// The contents of `arc` for writing; copied first (clone on write) if anything else holds a
/// reference to them.
#[inline]
pub(crate) fn exclusive<T: Clone>(arc: &mut Arc<T>) -> &mut T {
    if is_unique(arc) {
        unique_mut(arc).expect("checked unique just above, and `&mut arc` keeps it so")
    } else {
        Arc::make_mut(arc)
    }
}

/// `value` as a `&T`, if `type_id` is `T`'s.
///
/// The caller's invariant: `type_id` is the `TypeId` of the concrete type behind `value`
/// (the heap backend records both together when it registers a state).
#[inline]
pub(crate) fn downcast<T: Any, D: ?Sized>(value: &D, type_id: TypeId) -> Option<&T> {
    if type_id == TypeId::of::<T>() {
        // SAFETY: by the caller's invariant `type_id` is the concrete type of `value`, and it
        // equals `T`'s, so the data pointer of `value` points to a valid `T`.
        Some(unsafe { &*(value as *const D as *const T) })
    } else {
        None
    }
}

/// `value` as a `&mut T`, if `type_id` is `T`'s (the invariant of [`downcast`]).
#[inline]
pub(crate) fn downcast_mut<T: Any, D: ?Sized>(value: &mut D, type_id: TypeId) -> Option<&mut T> {
    if type_id == TypeId::of::<T>() {
        // SAFETY: as in `downcast`: the concrete type behind `value` is `T`.
        Some(unsafe { &mut *(value as *mut D as *mut T) })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_writes_in_place_when_unique_and_copies_when_shared() {
        let mut a = Arc::new(vec![1, 2, 3]);
        let before = Arc::as_ptr(&a);
        exclusive(&mut a).push(4);
        assert_eq!(Arc::as_ptr(&a), before, "unique: changed in place");
        let shared = a.clone();
        exclusive(&mut a).push(5);
        assert_ne!(Arc::as_ptr(&a), before, "shared: copied first");
        assert_eq!(*shared, vec![1, 2, 3, 4]);
        assert_eq!(*a, vec![1, 2, 3, 4, 5]);
        let weak = Arc::downgrade(&a);
        exclusive(&mut a).push(6);
        // With a weak reference the counters say "not unique": make_mut moves the data out
        // and the weak reference can no longer be upgraded.
        assert!(
            weak.upgrade().is_none(),
            "a weak reference is disassociated, never aliased"
        );
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn exclusive_after_another_thread_dropped_its_reference() {
        let mut a = Arc::new(vec![0u64; 1024]);
        let other = a.clone();
        std::thread::spawn(move || assert_eq!(other.iter().sum::<u64>(), 0))
            .join()
            .expect("the reader thread does not panic");
        exclusive(&mut a)[0] = 7;
        assert_eq!(a[0], 7);
    }

    #[test]
    fn downcast_checks_the_recorded_type() {
        let mut value: Box<dyn Any> = Box::new(41u32);
        let id = (*value).type_id();
        assert_eq!(downcast::<u32, dyn Any>(&*value, id), Some(&41));
        assert_eq!(downcast::<u64, dyn Any>(&*value, id), None);
        *downcast_mut::<u32, dyn Any>(&mut *value, id).expect("the type matches") += 1;
        assert_eq!(value.downcast_ref::<u32>(), Some(&42));
        assert!(downcast_mut::<i32, dyn Any>(&mut *value, id).is_none());
        let mut slice: Arc<[u8]> = Arc::from(vec![1, 2]);
        unique_mut(&mut slice).expect("unique")[0] = 9;
        let other = slice.clone();
        assert!(unique_mut(&mut slice).is_none());
        assert_eq!(&other[..], &[9, 2]);
    }
}
