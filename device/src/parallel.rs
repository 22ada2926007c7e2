//! Functional speed: large kernels and copies are cut into pieces that the calling
//! thread and one persistent helper thread claim one at a time (device time does not
//! depend on any of this).
//!
//! Pieces are claimed from a shared counter, so a helper that starts late (it was
//! asleep, or another process had its core) simply takes fewer of them, and if the
//! caller has claimed them all before the helper took the job, the job is withdrawn
//! without waiting for the helper at all. Without the `std` feature, or on a machine
//! with one hardware thread, or while another device thread is using the helper,
//! every piece runs on the calling thread, in order.
// One of the device crate's three unsafe modules (with `nsp::gemm` and `nsp::avx512`):
// the job the helper runs borrows the caller's frame, and the pieces of one slice are
// handed out as disjoint mutable sub-slices.
#![allow(unsafe_code)]

/// Calls `f(i)` exactly once for every `i` in `0..n`, spread over the calling thread
/// and the helper; returns when every call has returned. A panic in any call is
/// propagated to the caller (after the other pieces have finished).
pub fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    match n {
        0 => {}
        1 => f(0),
        _ => imp::for_each(n, f),
    }
}

/// Calls `f(i, piece)` for every piece of `data` cut into `piece` elements (the last
/// may be shorter), as [`for_each`] does.
pub fn for_each_chunk_mut<T: Send>(data: &mut [T], piece: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    let piece = piece.max(1);
    let n = data.len().div_ceil(piece);
    let base = Base(data.as_mut_ptr());
    let len = data.len();
    for_each(n, &|i| {
        let start = i * piece;
        let end = (start + piece).min(len);
        // SAFETY: `start..end` lies inside `data` (i < n = ceil(len / piece)); every `i`
        // is handed out exactly once, so the sub-slices are disjoint, and `data` stays
        // mutably borrowed by this function until every call has returned.
        let part = unsafe { core::slice::from_raw_parts_mut(base.at(start), end - start) };
        f(i, part)
    });
}

/// The start of a slice whose disjoint pieces several threads write.
struct Base<T>(*mut T);

impl<T> Base<T> {
    /// Going through a method makes closures capture the whole `Base` (which is
    /// `Sync`), not its raw pointer field.
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

// SAFETY: only used by `for_each_chunk_mut`, which hands every piece to one thread; the
// elements are `Send`.
unsafe impl<T: Send> Sync for Base<T> {}

#[cfg(not(feature = "std"))]
mod imp {
    pub(super) fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(f);
    }
}

#[cfg(feature = "std")]
mod imp {
    extern crate std;
    use alloc::boxed::Box;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
    use std::time::{Duration, Instant};

    type Job = Box<dyn FnOnce() + Send + 'static>;

    /// How long either side spins before it sleeps: pieces come every few tens of
    /// microseconds, and waking a sleeping thread can take longer than that (notably
    /// on virtual machines).
    const SPIN: Duration = Duration::from_millis(2);

    #[derive(Default)]
    struct Slot {
        job: Option<Job>,
        /// The helper has taken the job and not finished it.
        running: bool,
        panicked: bool,
        /// The helper is blocked on `changed` waiting for a job.
        helper_asleep: bool,
        /// The caller is blocked on `changed` waiting for the job to finish.
        caller_asleep: bool,
    }

    #[derive(Default)]
    struct Helper {
        slot: Mutex<Slot>,
        changed: Condvar,
        /// A job is waiting in the slot.
        posted: AtomicBool,
        /// The helper is not running a job.
        finished: AtomicBool,
        /// Held by the caller whose job the helper runs.
        owner: Mutex<()>,
    }

    /// Spins until `flag` is set or [`SPIN`] has passed; whether it was set.
    fn spin_until(flag: &AtomicBool) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if flag.load(Ordering::Acquire) {
                    return true;
                }
                core::hint::spin_loop();
            }
            if start.elapsed() > SPIN {
                return false;
            }
        }
    }

    impl Helper {
        fn slot(&self) -> MutexGuard<'_, Slot> {
            self.slot.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn wait<'a>(&self, s: MutexGuard<'a, Slot>) -> MutexGuard<'a, Slot> {
            self.changed.wait(s).unwrap_or_else(|e| e.into_inner())
        }

        fn serve(&self) {
            loop {
                spin_until(&self.posted);
                let job = {
                    let mut s = self.slot();
                    loop {
                        if let Some(job) = s.job.take() {
                            s.running = true;
                            break job;
                        }
                        s.helper_asleep = true;
                        s = self.wait(s);
                        s.helper_asleep = false;
                    }
                };
                self.posted.store(false, Ordering::Relaxed);
                let panicked = catch_unwind(AssertUnwindSafe(job)).is_err();
                let wake = {
                    let mut s = self.slot();
                    s.running = false;
                    s.panicked = panicked;
                    s.caller_asleep
                };
                self.finished.store(true, Ordering::Release);
                if wake {
                    self.changed.notify_all();
                }
            }
        }
    }

    fn helper() -> Option<&'static Helper> {
        static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
        *HELPER.get_or_init(|| {
            if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
                return None;
            }
            let h: &'static Helper = Box::leak(Box::default());
            std::thread::Builder::new().name("aicsim-helper".into()).spawn(move || h.serve()).ok()?;
            Some(h)
        })
    }

    /// Withdraws the job if the helper has not taken it yet, or waits until the helper
    /// has finished it. Runs on every way out of [`for_each`], unwinding included: the
    /// job borrows that frame.
    struct Finish(&'static Helper);

    impl Drop for Finish {
        fn drop(&mut self) {
            let h = self.0;
            {
                let mut s = h.slot();
                if s.job.take().is_some() {
                    h.posted.store(false, Ordering::Relaxed);
                    return;
                }
            }
            spin_until(&h.finished);
            let mut s = h.slot();
            while s.running {
                s.caller_asleep = true;
                s = h.wait(s);
                s.caller_asleep = false;
            }
        }
    }

    pub(super) fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
        let inline = || (0..n).for_each(f);
        let Some(h) = helper() else { return inline() };
        let Ok(_owner) = h.owner.try_lock() else { return inline() };
        let next = AtomicUsize::new(0);
        let claim = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        };
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(claim);
        // SAFETY: only the lifetime changes. The job borrows `next` and `f` from this
        // frame, and `Finish` (dropped before this frame is left, by return or by
        // unwinding) either takes the job back unrun or waits until the helper has
        // run it to the end.
        let job: Job = unsafe { core::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        let wake = {
            let mut s = h.slot();
            s.panicked = false;
            s.job = Some(job);
            h.finished.store(false, Ordering::Relaxed);
            s.helper_asleep
        };
        h.posted.store(true, Ordering::Release);
        if wake {
            h.changed.notify_all();
        }
        let finish = Finish(h);
        claim();
        drop(finish);
        if h.slot().panicked {
            resume_unwind(Box::new("a piece run by the helper thread panicked"));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_index_is_called_exactly_once() {
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            for _ in 0..50 {
                let calls: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_each(n, &|i| {
                    calls[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) == 1), "n = {n}");
            }
        }
    }

    #[test]
    fn pieces_of_a_slice_cover_it_once_with_their_own_index() {
        for (len, piece) in [(0, 4), (1, 4), (10, 3), (4096, 1000), (4096, 4096), (4097, 64)] {
            let mut data = vec![usize::MAX; len];
            for_each_chunk_mut(&mut data, piece, &|i, part| {
                assert!(part.len() <= piece && !part.is_empty());
                for (j, x) in part.iter_mut().enumerate() {
                    assert_eq!(*x, usize::MAX, "element written twice");
                    *x = i * piece + j;
                }
            });
            assert!(data.iter().enumerate().all(|(i, &x)| x == i), "len {len} piece {piece}");
        }
    }

    #[test]
    fn a_panicking_piece_reaches_the_caller_after_the_others_ran() {
        for _ in 0..20 {
            let done = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(|| {
                for_each(16, &|i| {
                    if i == 5 {
                        panic!("piece 5");
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                })
            });
            assert!(r.is_err());
            // The other pieces of the thread that did not panic all ran; nothing runs after.
            let settled = done.load(Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(1));
            assert_eq!(done.load(Ordering::Relaxed), settled);
        }
        // The helper still serves.
        let sum = AtomicUsize::new(0);
        for_each(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 4950);
    }

    #[test]
    fn callers_on_several_threads_each_get_all_their_pieces() {
        std::thread::scope(|s| {
            for t in 0..4usize {
                s.spawn(move || {
                    for round in 0..200usize {
                        let n = 1 + (t * 7 + round) % 40;
                        let calls: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each(n, &|i| {
                            calls[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }
}
