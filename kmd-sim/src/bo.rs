//! Buffer objects: page-aligned extents of the host memory window, their slicing into
//! request elements, and their completion state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aicsim_abi::dbc::{CompletionCode, RequestElement};
use parking_lot::{Condvar, Mutex};

use crate::error::{Errno, KmdError};

/// A buffer's slicing: the request elements EXECUTE_BO queues for it, built once at
/// ATTACH_SLICE_BO time.
pub(crate) struct Slicing {
    pub dbc: u32,
    pub dir: u32,
    /// Element templates; `req_id` is filled at execute time.
    pub elements: Vec<RequestElement>,
    /// For each element: whether it is the last of its slice (the one that completes).
    pub ends_slice: Vec<bool>,
    /// For each element: its byte offset inside the buffer.
    pub offsets: Vec<u64>,
    pub slices: u32,
}

/// Bit 22 of a semaphore command: presync.
const SEM_PRESYNC: u32 = 1 << 22;
/// Bit 4 of cmd: write a completion element.
const CMD_COMPLETION: u8 = 1 << 4;

impl Slicing {
    /// The elements that move only the first `resize` bytes (PARTIAL_EXECUTE_BO): slices
    /// past `resize` are dropped, the one it cuts is shortened, and a shortened slice's
    /// new last element takes over the completion, doorbell and postsync semaphores.
    /// Returns elements, end-of-slice flags and the number of slices left.
    pub fn truncated(&self, resize: u64) -> (Vec<RequestElement>, Vec<bool>, u32) {
        let (mut elements, mut ends, mut slices) = (Vec::new(), Vec::new(), 0);
        let mut start = 0;
        for end in 0..self.elements.len() {
            if !self.ends_slice[end] {
                continue;
            }
            let kept: Vec<usize> = (start..=end).filter(|&i| self.offsets[i] < resize).collect();
            if let Some(&last_kept) = kept.last() {
                slices += 1;
                for &i in &kept {
                    let mut e = self.elements[i];
                    e.len = e.len.min((resize - self.offsets[i]) as u32);
                    if i == last_kept && i != end {
                        let original = self.elements[end];
                        e.cmd |= original.cmd & CMD_COMPLETION;
                        (e.db_addr, e.db_attr, e.db_data) = (original.db_addr, original.db_attr, original.db_data);
                        let pre = e.sem_cmd.iter().copied().filter(|&c| c != 0 && c & SEM_PRESYNC != 0);
                        let post = original.sem_cmd.iter().copied().filter(|&c| c != 0 && c & SEM_PRESYNC == 0);
                        let mut merged = [0u32; 4];
                        for (slot, c) in merged.iter_mut().zip(pre.chain(post)) {
                            *slot = c;
                        }
                        e.sem_cmd = merged;
                    }
                    elements.push(e);
                    ends.push(i == last_kept);
                }
            }
            start = end + 1;
        }
        (elements, ends, slices)
    }
}

/// Timestamps and queue figures of the latest execution (PERF_STATS_BO).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Perf {
    pub received: Instant,
    pub submitted: Instant,
    pub processed: Instant,
    pub queue_level_before: u32,
    pub num_queue_element: u32,
}

pub(crate) struct BoState {
    pub slicing: Option<Slicing>,
    pub queued: bool,
    /// Executions started and finished; equal when the buffer is idle.
    pub executions: u64,
    pub completed: u64,
    pub slices_left: u32,
    /// The first error completion of the current execution.
    pub error: Option<CompletionCode>,
    /// Why the current execution was abandoned without completing (channel torn down,
    /// device gone).
    pub aborted: Option<KmdError>,
    pub perf: Option<Perf>,
    /// On the simulated clock: when the current execution's last response was posted
    /// (simulated nanoseconds; 0 otherwise).
    pub completed_at_ns: u64,
}

pub(crate) struct Bo {
    pub handle: u32,
    /// Region offset (= host address).
    pub offset: u64,
    pub size: u64,
    pub state: Mutex<BoState>,
    pub done: Condvar,
    /// Mirrors `!state.queued`, so a waiter can poll without taking the lock.
    idle: AtomicBool,
    /// The driver, to give the extent back (unmapped from every channel first) when the
    /// last reference goes.
    shared: std::sync::Weak<crate::Shared>,
}

impl Bo {
    pub fn new(handle: u32, offset: u64, size: u64, shared: std::sync::Weak<crate::Shared>) -> Bo {
        Bo {
            handle,
            offset,
            size,
            state: Mutex::new(BoState {
                slicing: None,
                queued: false,
                executions: 0,
                completed: 0,
                slices_left: 0,
                error: None,
                aborted: None,
                perf: None,
                completed_at_ns: 0,
            }),
            done: Condvar::new(),
            idle: AtomicBool::new(true),
            shared,
        }
    }

    /// Marks the buffer queued or idle (call with the state lock held).
    pub fn set_queued(&self, st: &mut BoState, queued: bool) {
        st.queued = queued;
        // Release: a waiter that sees idle also sees the completion recorded before it.
        self.idle.store(!queued, Ordering::Release);
    }

    /// Records one response for this buffer, posted at `posted_ns` on the simulated
    /// clock. `ends_slice` responses count down the slices; the last one completes the
    /// execution and wakes waiters.
    pub fn complete_element(&self, ends_slice: bool, status: u16, posted_ns: u64) {
        let mut st = self.state.lock();
        if !st.queued {
            return;
        }
        st.completed_at_ns = st.completed_at_ns.max(posted_ns);
        if status != 0 && st.error.is_none() {
            st.error = Some(CompletionCode::from_status(status).unwrap_or(CompletionCode::ProgramFault));
        }
        if ends_slice {
            st.slices_left = st.slices_left.saturating_sub(1);
            if st.slices_left == 0 {
                self.set_queued(&mut st, false);
                st.completed = st.executions;
                if let Some(p) = &mut st.perf {
                    p.processed = Instant::now();
                }
                self.done.notify_all();
            }
        }
    }

    /// Ends the current execution without completion (its elements were dropped).
    pub fn abort(&self, why: KmdError) {
        let mut st = self.state.lock();
        if st.queued {
            self.set_queued(&mut st, false);
            st.completed = st.executions;
            st.aborted = Some(why);
            self.done.notify_all();
        }
    }

    /// Waits for the current execution to finish, at most `timeout`; `online` says
    /// whether the device is still there. Polls (yielding the CPU) for up to `spin`
    /// before sleeping: a completion that is microseconds away is cheaper to catch
    /// awake than through a futex wake-up.
    ///
    /// `poll` runs on each spin: the caller may drain the response ring itself there
    /// (busy polling) instead of waiting for the interrupt thread.
    pub fn wait(
        &self,
        timeout: Duration,
        spin: Duration,
        mut poll: impl FnMut(),
        online: impl Fn() -> bool,
    ) -> Result<(), KmdError> {
        // Acquire: pairs with the Release in `set_queued`. Already finished: no clock
        // reads, no spinning.
        let mut deadline = None;
        if !self.idle.load(Ordering::Acquire) {
            let start = Instant::now();
            deadline = Some(start + timeout);
            let backoff = crossbeam_utils::Backoff::new();
            while !self.idle.load(Ordering::Acquire) && start.elapsed() < spin.min(timeout) {
                poll();
                if self.idle.load(Ordering::Acquire) {
                    break;
                }
                backoff.snooze();
            }
        }
        let mut st = self.state.lock();
        loop {
            if st.executions > 0 && !st.queued && st.completed == st.executions {
                if let Some(why) = st.aborted.clone() {
                    return Err(why);
                }
                return match st.error {
                    Some(code) => Err(KmdError::device(code, format!("buffer {}", self.handle))),
                    None => Ok(()),
                };
            }
            if !online() {
                return Err(KmdError::new(Errno::ENODEV, "device is offline"));
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            // Wake at least every 50 ms to notice a device that went away.
            let slice_end = deadline.min(Instant::now() + Duration::from_millis(50));
            if self.done.wait_until(&mut st, slice_end).timed_out() && Instant::now() >= deadline {
                return Err(KmdError::new(
                    Errno::ETIMEDOUT,
                    format!("buffer {} did not complete within {} ms", self.handle, timeout.as_millis()),
                ));
            }
        }
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            // No channel may reach the pages once another buffer can be given them.
            for dbc in 0..aicsim_abi::dbc::NUM_DBC {
                aicsim_abi::iommu::unmap(&shared.region, &shared.map, dbc, self.offset, self.size);
            }
            shared.host_mem.lock().release(self.offset - shared.map.host_offset(), self.size);
        }
    }
}
