//! The firmware on the simulated clock ([`Pacing::Simulated`]): when each element is
//! served, how long its transfer over the host link takes, and how far device time may
//! run ahead of the hosts (see [`aicsim_abi::clock`] for the protocol).
//!
//! An element is served once the device clock has reached its stamp and its transfer
//! over the host link is over. The link is one transfer at a time per direction, taken
//! in the order transfers become possible. An output element waits (presync) for its
//! program; inbound elements queued behind it still cross the link meanwhile (the DMA
//! bridge reads ahead on the link), but take effect — bytes written, semaphores,
//! doorbell, response — in ring order once they reach the head, so a program's inputs
//! never change under it.

use alloc::collections::VecDeque;
use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use super::{Firmware, Serviced};
use crate::scheduler::ExecMode;
use aicsim_abi::clock::{self, RequestStamp, NO_PROMISE, REQUEST_STAMP_BYTES, STAMP_WAKES_HOST};
use aicsim_abi::dbc::{Direction, RequestElement, Ring, NUM_DBC};
use aicsim_abi::layout;
use aicsim_abi::memory::{CopyTicket, SharedMemory};

/// Most inbound elements past a blocked head whose transfer is timed early.
const READ_AHEAD: usize = 64;

/// An element copied out of the ring, with its time.
#[derive(Clone, Copy, Debug)]
struct Pending {
    index: u32,
    element: RequestElement,
    flags: u32,
    /// The cycle its stamp says it reaches the channel.
    arrival: u64,
    /// When its transfer over the host link ends, once timed.
    ready: Option<u64>,
    /// Its bytes, already on their way (see [`Firmware::prestart`]).
    copy: Option<CopyTicket>,
}

#[derive(Default)]
struct TimedChannel {
    /// The element at the head, once read.
    head: Option<Pending>,
    /// Elements after the head, read ahead (consecutive ring slots).
    ahead: VecDeque<Pending>,
    /// Posting cycles of waking responses the host has not acknowledged, oldest first.
    wakes: VecDeque<u64>,
    /// Waking responses posted since activation.
    wakes_posted: u32,
    /// The request tail the device last saw: elements past it are new.
    seen_tail: u32,
}

/// What the simulated clock keeps beside the firmware's state.
#[derive(Default)]
pub(super) struct Timed {
    channels: [TimedChannel; NUM_DBC],
    /// When each direction of the host link is free: to the device, from it.
    link_free: [u64; 2],
    /// When the latest response the host reacts to was posted, in ns, while the
    /// published progress has not reached it yet (the host can take up the request the
    /// completion frees only from there).
    wake_unpublished: Option<u64>,
    /// The last pass stopped at the hosts' horizon (not for want of anything to do).
    held: bool,
}

impl Firmware {
    /// One pass on the simulated clock: serves every channel at the current cycle, moves
    /// to the next thing that happens, and so on, never reaching the hosts' horizon;
    /// then tells the hosts how far it got.
    pub(super) fn service_simulated<M: SharedMemory>(&mut self, mem: &M) -> Serviced {
        let mut done = Serviced { control: self.service_control(mem), ..Default::default() };
        let started_at = self.scheduler.now();
        self.timed.held = false;
        loop {
            // The horizon first, the rings after: an element the host queued before it
            // moved its promise past that element's time is on the ring by then.
            let horizon = self.horizon(mem);
            let mut served = 0;
            for dbc in 0..NUM_DBC {
                if self.activations[dbc].is_some() {
                    served += self.service_channel(dbc, mem);
                }
            }
            done.elements += served;
            if served > 0 {
                continue;
            }
            if self.timed.wake_unpublished.is_some_and(|ns| self.progress_ns() >= ns) {
                // Everything before this cycle is served: the host may take the
                // completion in, and take up what it leads to, while the device goes on
                // towards the horizon.
                self.publish_progress(mem);
            }
            let now = self.scheduler.now();
            // Everything before the horizon may happen; nothing at or after it.
            let Some(last) = horizon.checked_sub(1) else {
                self.timed.held = true;
                break;
            };
            let next = self.next_element_event(now);
            let mut limit = next.min(last);
            if let Some(ns) = self.timed.wake_unpublished {
                // Stop where that completion can be published, not a program later.
                let publishable = clock::cycles_at_or_after(ns, self.config.clock_hz);
                if publishable > now {
                    limit = limit.min(publishable);
                }
            }
            if limit <= now {
                self.timed.held = true;
                break;
            }
            if self.scheduler.is_idle() {
                // Idle time passes up to the next element, or to the horizon if one is
                // promised; with neither there is nothing to simulate.
                if next == u64::MAX && horizon == u64::MAX {
                    break;
                }
                self.scheduler.idle_until(limit);
                continue;
            }
            done.programs += self.finish_programs(mem, limit);
        }
        let now = self.scheduler.now();
        if done.progressed() || now != started_at {
            self.publish_progress(mem);
        }
        done
    }

    /// Whether the last pass on the simulated clock stopped at the hosts' horizon: a host
    /// is about to move it (it owes a reaction to a completion, or its next request).
    pub fn held_by_hosts(&self) -> bool {
        self.config.pacing == crate::Pacing::Simulated && self.timed.held
    }

    /// The first cycle the device may not reach yet: the earliest moment some host could
    /// still stamp an element with.
    fn horizon<M: SharedMemory>(&mut self, mem: &M) -> u64 {
        let map = self.config.map;
        let hz = self.config.clock_hz;
        let mut horizon = u64::MAX;
        for dbc in 0..NUM_DBC {
            if self.activations[dbc].is_none() {
                continue;
            }
            // Acquire: the host stores its promise before the acknowledgement.
            let acked = mem.load_u32(map.clock_reg(dbc, clock::HOST_ACKED), Acquire);
            let promise = mem.load_u64(map.clock_reg(dbc, clock::PROMISE_NS), Acquire);
            let lookahead = mem.load_u64(map.clock_reg(dbc, clock::LOOKAHEAD_NS), Acquire);
            let ch = &mut self.timed.channels[dbc];
            let unacked = ch.wakes_posted.wrapping_sub(acked) as usize;
            while ch.wakes.len() > unacked {
                ch.wakes.pop_front();
            }
            if promise != NO_PROMISE {
                horizon = horizon.min(clock::cycles_at_or_after(promise, hz));
            }
            if let Some(&posted) = ch.wakes.front() {
                let ns = clock::ns_at_or_after(posted, hz).saturating_add(lookahead);
                horizon = horizon.min(clock::cycles_at_or_after(ns, hz));
            }
        }
        horizon
    }

    /// The next cycle after `now` at which an element's time comes or its transfer ends,
    /// on any channel (`u64::MAX` if none is pending).
    fn next_element_event(&self, now: u64) -> u64 {
        let mut next = u64::MAX;
        for (dbc, ch) in self.timed.channels.iter().enumerate() {
            if self.activations[dbc].is_none() {
                continue;
            }
            for p in ch.head.iter().chain(ch.ahead.iter()) {
                let at = p.ready.unwrap_or(p.arrival);
                if at > now {
                    next = next.min(at);
                }
            }
        }
        next
    }

    /// The head element of channel `dbc` (at ring slot `index`), if it can be served at
    /// the current cycle.
    pub(super) fn timed_head<M: SharedMemory>(
        &mut self,
        dbc: usize,
        index: u32,
        tail: u32,
        mem: &M,
    ) -> Option<RequestElement> {
        let now = self.scheduler.now();
        let ch = &mut self.timed.channels[dbc];
        if ch.head.is_none() {
            let ahead = ch.ahead.pop_front().filter(|p| p.index == index);
            if ahead.is_none() {
                ch.ahead.clear();
            }
            self.timed.channels[dbc].head = match ahead {
                Some(p) => Some(p),
                None => Some(self.read_pending(dbc, index, mem)?),
            };
        }
        let mut head = self.timed.channels[dbc].head?;
        if head.arrival > now {
            return None;
        }
        let direction = match self.check_element(dbc, &head.element, mem) {
            // A bad element fails at once (with its error completion).
            Err(_) => return Some(head.element),
            Ok(checked) => {
                if let Some(pre) = checked.presync {
                    if head.ready.is_none() && !self.sem_would_pass(pre, mem) {
                        self.read_ahead(dbc, index, tail, mem);
                        return None;
                    }
                }
                checked.cmd.direction
            }
        };
        if direction == Direction::None {
            return Some(head.element);
        }
        let ready = match head.ready {
            Some(ready) => ready,
            None => {
                let ready = self.take_link(direction, head.element.len, now);
                head.ready = Some(ready);
                head.copy = self.prestart(&head.element, direction, mem);
                self.timed.channels[dbc].head = Some(head);
                ready
            }
        };
        if ready > now {
            return None;
        }
        self.prestarted = head.copy.take();
        self.timed.channels[dbc].head = Some(head);
        Some(head.element)
    }

    fn read_stamp<M: SharedMemory>(&self, dbc: usize, index: u32, mem: &M) -> Option<RequestStamp> {
        let mut raw = [0u8; REQUEST_STAMP_BYTES as usize];
        mem.read(self.config.map.request_stamp(dbc, index), &mut raw).ok()?;
        Some(bytemuck::pod_read_unaligned(&raw))
    }

    /// Elements the host queued since the device last looked (up to `tail`) must be
    /// stamped no earlier than the device has simulated: one that is broke the host's
    /// promise (or came from a host that does not stamp), and is counted. It is served
    /// as if it had arrived now.
    pub(super) fn timed_new_elements<M: SharedMemory>(&mut self, dbc: usize, tail: u32, mem: &M) {
        let (now, hz) = (self.scheduler.now(), self.config.clock_hz);
        let mut index = self.timed.channels[dbc].seen_tail;
        while index != tail {
            if self.read_stamp(dbc, index, mem).is_some_and(|s| clock::cycles_at_or_after(s.time_ns, hz) < now) {
                mem.fetch_add_u32(layout::LATE_ELEMENTS, 1, SeqCst);
            }
            index = self.ring.next(index);
        }
        self.timed.channels[dbc].seen_tail = tail;
    }

    /// Copies element `index` and its stamp out of the ring. It arrives at its stamp, or
    /// now if it has been waiting behind others since.
    fn read_pending<M: SharedMemory>(&mut self, dbc: usize, index: u32, mem: &M) -> Option<Pending> {
        let element = self.read_element(dbc, index, mem)?;
        let stamp = self.read_stamp(dbc, index, mem)?;
        let arrival = clock::cycles_at_or_after(stamp.time_ns, self.config.clock_hz).max(self.scheduler.now());
        Some(Pending { index, element, flags: stamp.flags, arrival, ready: None, copy: None })
    }

    /// Starts a transfer of `len` bytes over the host link in `direction` at `now` (or
    /// when the link is free); returns when it ends.
    fn take_link(&mut self, direction: Direction, len: u32, now: u64) -> u64 {
        let way = usize::from(direction == Direction::FromDevice);
        let start = now.max(self.timed.link_free[way]);
        let end = start + self.config.cost.host_link_cycles(u64::from(len), self.config.clock_hz);
        self.timed.link_free[way] = end;
        end
    }

    /// In a timing run, a transfer's bytes start moving as soon as it is timed, beside
    /// the firmware (the DMA bridge's own engine): no program reads an inbound
    /// transfer's destination before it lands, an outbound one is timed only once its
    /// program is done (and a timing run writes nothing to DDR), and the host does not
    /// touch its buffer while it is queued. It lands, in ring order, when the element
    /// takes effect. A functional run moves the bytes then instead: a running program
    /// may still be reading the old inputs.
    fn prestart<M: SharedMemory>(&self, e: &RequestElement, direction: Direction, mem: &M) -> Option<CopyTicket> {
        if self.config.mode != ExecMode::Timing {
            return None;
        }
        let ddr = self.config.map.ddr_offset();
        let (src, dst) = match direction {
            Direction::ToDevice => (e.src_addr, ddr.checked_add(e.dest_addr)?),
            Direction::FromDevice => (ddr.checked_add(e.src_addr)?, e.dest_addr),
            Direction::None => return None,
        };
        mem.copy_start(src, dst, u64::from(e.len)).ok()
    }

    /// While the head waits for its program, inbound elements queued behind it that have
    /// arrived cross the link, in order, up to the first element that is not one.
    fn read_ahead<M: SharedMemory>(&mut self, dbc: usize, head: u32, tail: u32, mem: &M) {
        let ring: Ring = self.ring;
        let now = self.scheduler.now();
        let mut index = ring.next(head);
        let mut slot = 0;
        while index != tail && slot < READ_AHEAD {
            let ch = &self.timed.channels[dbc];
            let pending = match ch.ahead.get(slot) {
                Some(p) => *p,
                None => {
                    let Some(p) = self.read_pending(dbc, index, mem) else { return };
                    self.timed.channels[dbc].ahead.push_back(p);
                    p
                }
            };
            let inbound = self
                .check_element(dbc, &pending.element, mem)
                .is_ok_and(|c| c.cmd.direction == Direction::ToDevice && c.presync.is_none());
            if !inbound || pending.arrival > now {
                return;
            }
            if pending.ready.is_none() {
                let ready = self.take_link(Direction::ToDevice, pending.element.len, now);
                let copy = self.prestart(&pending.element, Direction::ToDevice, mem);
                if let Some(p) = self.timed.channels[dbc].ahead.get_mut(slot) {
                    p.ready = Some(ready);
                    p.copy = copy;
                }
            }
            index = ring.next(index);
            slot += 1;
        }
    }

    /// A response to the head element was written to response slot `slot`: its stamp,
    /// and a waking response counted.
    pub(super) fn timed_responded<M: SharedMemory>(&mut self, dbc: usize, slot: u32, mem: &M) {
        let now = self.scheduler.now();
        let ns = clock::ns_at_or_after(now, self.config.clock_hz);
        let _ = mem.write(self.config.map.response_stamp(dbc, slot), &ns.to_le_bytes());
        let ch = &mut self.timed.channels[dbc];
        if ch.head.is_some_and(|h| h.flags & STAMP_WAKES_HOST != 0) {
            ch.wakes.push_back(now);
            ch.wakes_posted = ch.wakes_posted.wrapping_add(1);
            self.timed.wake_unpublished = Some(ns);
        }
    }

    /// The head element was consumed.
    pub(super) fn timed_consumed(&mut self, dbc: usize) {
        self.timed.channels[dbc].head = None;
    }

    /// Release: the waking responses counted are visible with the response tail.
    pub(super) fn timed_publish_wakes<M: SharedMemory>(&self, dbc: usize, mem: &M) {
        let posted = self.timed.channels[dbc].wakes_posted;
        mem.store_u32(self.config.map.clock_reg(dbc, clock::DEVICE_WAKES), posted, Release);
    }

    /// A fresh activation on `dbc`: nothing pending, nothing promised.
    pub(super) fn reset_timed_channel<M: SharedMemory>(&mut self, dbc: usize, mem: &M) {
        self.timed.channels[dbc] = TimedChannel::default();
        let map = self.config.map;
        mem.store_u64(map.clock_reg(dbc, clock::PROMISE_NS), NO_PROMISE, Release);
        mem.store_u64(map.clock_reg(dbc, clock::LOOKAHEAD_NS), 0, Release);
        mem.store_u32(map.clock_reg(dbc, clock::HOST_ACKED), 0, Release);
        mem.store_u32(map.clock_reg(dbc, clock::DEVICE_WAKES), 0, Release);
    }

    /// How far the device has simulated, as published: every response earlier than
    /// this moment (ns) is posted.
    fn progress_ns(&self) -> u64 {
        clock::ns_at_or_before(self.scheduler.now(), self.config.clock_hz)
    }

    /// Tells the hosts how far the device has simulated and wakes those waiting for it.
    fn publish_progress<M: SharedMemory>(&mut self, mem: &M) {
        let now_ns = self.progress_ns();
        if self.timed.wake_unpublished.is_some_and(|ns| now_ns >= ns) {
            self.timed.wake_unpublished = None;
        }
        // Release: every response before this moment is visible before the moment is.
        mem.store_u64(layout::DEVICE_NOW_NS, now_ns, Release);
        mem.fetch_add_u32(layout::DEVICE_PROGRESS, 1, SeqCst);
        // The fence pairs with the waiter's: either it sees the new progress value, or we
        // see it waiting.
        core::sync::atomic::fence(SeqCst);
        if mem.load_u32(layout::PROGRESS_WAITERS, SeqCst) != 0 {
            mem.wake(layout::DEVICE_PROGRESS);
        }
    }
}
