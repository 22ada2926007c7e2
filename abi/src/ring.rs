//! The two ends of a DMA Bridge Channel ring, the one place that writes ring indices.
//!
//! Each channel has two rings in shared memory, and each ring two indices: the producer
//! fills slots at its tail and publishes the tail, the consumer takes slots at its head
//! and publishes the head. Both sides of the PCIe boundary use these endpoints:
//!
//! | ring | producer | consumer |
//! |---|---|---|
//! | request | host (kernel driver, `EXECUTE_BO`) | device firmware |
//! | response | device firmware | host (interrupt handler) |
//!
//! The orderings are the whole protocol:
//! - a producer writes a slot, then publishes its tail with Release; a consumer observes
//!   the tail with Acquire before it reads the slots the tail covers;
//! - a consumer reads its slots, then publishes its head with Release; a producer
//!   observes the head with Acquire before it overwrites the slots the head freed;
//! - the response ring's wake-up: the device publishes its tail, fences (SeqCst) and
//!   observes the host's head ([`Producer::publish_and_check_idle`]); the host publishes
//!   its head, fences and observes the tail again ([`Consumer::publish_and_recheck`]).
//!   Of the two observations at least one sees the other's store, so either the host
//!   finds the new responses on its re-check, or the device sees that the host had
//!   consumed everything before them and raises an interrupt. A wake-up is never lost;
//!   `tests/loom_ring.rs` checks that with these very endpoints under loom.
//!
//! An index read from the other side may be garbage (a link that reads all-ones, a
//! corrupted register): it is reported as [`BadIndex`] and nothing is consumed or
//! overwritten on its account.
//!
//! The endpoints keep only their own side's view (plain integers); where the indices
//! live is behind [`Indices`], implemented over [`SharedMemory`] registers by
//! [`SharedIndices`] and over loom atomics by the model check.

use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use crate::dbc::{Ring, REQ_HEAD, REQ_TAIL, RSP_HEAD, RSP_TAIL};
use crate::layout::MemoryMap;
use crate::memory::SharedMemory;

/// The two indices of one ring as one endpoint reaches them.
pub trait Indices {
    /// Stores this endpoint's index with Release.
    fn publish(&self, index: u32);
    /// Loads the other endpoint's index with Acquire.
    fn observe(&self) -> u32;
    /// A sequentially consistent fence between a publish and an observe.
    fn fence(&self);
}

/// A ring's indices in shared memory: this endpoint's register at `own`, the other's at
/// `other` (offsets from [`crate::layout::MemoryMap::dbc_reg`]).
#[derive(Clone, Copy)]
pub struct SharedIndices<'a, M: SharedMemory + ?Sized> {
    pub mem: &'a M,
    pub own: u64,
    pub other: u64,
}

impl<'a, M: SharedMemory + ?Sized> SharedIndices<'a, M> {
    /// The host's end of channel `dbc`'s request ring: it publishes the tail.
    pub fn host_requests(mem: &'a M, map: &MemoryMap, dbc: usize) -> Self {
        SharedIndices { mem, own: map.dbc_reg(dbc, REQ_TAIL), other: map.dbc_reg(dbc, REQ_HEAD) }
    }

    /// The host's end of channel `dbc`'s response ring: it publishes the head.
    pub fn host_responses(mem: &'a M, map: &MemoryMap, dbc: usize) -> Self {
        SharedIndices { mem, own: map.dbc_reg(dbc, RSP_HEAD), other: map.dbc_reg(dbc, RSP_TAIL) }
    }

    /// The device's end of channel `dbc`'s request ring: it publishes the head.
    pub fn device_requests(mem: &'a M, map: &MemoryMap, dbc: usize) -> Self {
        SharedIndices { mem, own: map.dbc_reg(dbc, REQ_HEAD), other: map.dbc_reg(dbc, REQ_TAIL) }
    }

    /// The device's end of channel `dbc`'s response ring: it publishes the tail.
    pub fn device_responses(mem: &'a M, map: &MemoryMap, dbc: usize) -> Self {
        SharedIndices { mem, own: map.dbc_reg(dbc, RSP_TAIL), other: map.dbc_reg(dbc, RSP_HEAD) }
    }
}

impl<M: SharedMemory + ?Sized> Indices for SharedIndices<'_, M> {
    fn publish(&self, index: u32) {
        self.mem.store_u32(self.own, index, Release);
    }

    fn observe(&self) -> u32 {
        self.mem.load_u32(self.other, Acquire)
    }

    fn fence(&self) {
        core::sync::atomic::fence(SeqCst);
    }
}

/// An index the other side published that is no ring position: `0xffff_ffff` when the
/// link is down, anything else when the register was corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIndex(pub u32);

/// The producing end: fills slots at its tail and publishes the tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Producer {
    ring: Ring,
    /// Next slot to fill; ahead of `published` while a batch is being filled.
    tail: u32,
    /// The tail as last published.
    published: u32,
    /// The consumer's head as last observed: slots before it are free.
    head: u32,
}

impl Producer {
    /// An empty ring, both indices at slot 0 (as after reset or activation).
    pub const fn new(ring: Ring) -> Producer {
        Producer { ring, tail: 0, published: 0, head: 0 }
    }

    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The slot to fill next.
    pub fn slot(&self) -> u32 {
        self.tail
    }

    /// Slots free as of the last observation of the consumer's head.
    pub fn free(&self) -> u32 {
        self.ring.free(self.head, self.tail)
    }

    /// Slots holding elements as of the last observation (the queue level).
    pub fn used(&self) -> u32 {
        self.ring.used(self.head, self.tail)
    }

    /// Observes the consumer's head afresh.
    pub fn refresh(&mut self, ix: &impl Indices) -> Result<(), BadIndex> {
        let head = ix.observe();
        if !self.ring.contains(head) {
            return Err(BadIndex(head));
        }
        self.head = head;
        Ok(())
    }

    /// Free slots, observing the consumer's head afresh only when the last observation
    /// shows fewer than `needed` (the head only ever frees more).
    pub fn room(&mut self, ix: &impl Indices, needed: u32) -> Result<u32, BadIndex> {
        if self.free() < needed {
            self.refresh(ix)?;
        }
        Ok(self.free())
    }

    /// The slot [`Producer::slot`] is filled: move the tail past it (not yet published).
    ///
    /// # Panics
    /// If the ring has no free slot as last observed: the caller checks [`Producer::room`].
    pub fn push(&mut self) {
        assert!(self.free() > 0, "push onto a full ring (check room first)");
        self.tail = self.ring.next(self.tail);
    }

    /// Elements filled since the last publish.
    pub fn unpublished(&self) -> u32 {
        self.ring.used(self.published, self.tail)
    }

    /// Publishes the tail (Release): the slots filled before are the consumer's. For a
    /// consumer woken some other way (the request ring's doorbell).
    pub fn publish(&mut self, ix: &impl Indices) {
        ix.publish(self.tail);
        self.published = self.tail;
    }

    /// Publishes the tail, fences, and observes the consumer's head: `true` if the
    /// consumer had taken everything published before this batch, so it may be asleep
    /// and must be woken (see the module doc for why this loses no wake-up). A garbage
    /// head wakes it too, as the safe answer.
    pub fn publish_and_check_idle(&mut self, ix: &impl Indices) -> bool {
        let before = self.published;
        self.publish(ix);
        ix.fence();
        let head = ix.observe();
        if !self.ring.contains(head) {
            return true;
        }
        self.head = head;
        head == before
    }

    /// Back to slot 0, published (the channel is released or re-activated).
    pub fn reset(&mut self, ix: &impl Indices) {
        *self = Producer::new(self.ring);
        ix.publish(0);
    }
}

/// The consuming end: takes slots at its head and publishes the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumer {
    ring: Ring,
    /// Next slot to take.
    head: u32,
    /// The producer's tail as last observed: slots before it hold elements.
    tail: u32,
}

impl Consumer {
    /// An empty ring, both indices at slot 0.
    pub const fn new(ring: Ring) -> Consumer {
        Consumer { ring, head: 0, tail: 0 }
    }

    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The slot to take next.
    pub fn slot(&self) -> u32 {
        self.head
    }

    /// Elements waiting as of the last observation of the producer's tail.
    pub fn pending(&self) -> u32 {
        self.ring.used(self.head, self.tail)
    }

    /// The producer's tail as last observed.
    pub fn observed_tail(&self) -> u32 {
        self.tail
    }

    /// Observes the producer's tail afresh (Acquire: the slots it covers are readable)
    /// and returns how many elements wait.
    pub fn refresh(&mut self, ix: &impl Indices) -> Result<u32, BadIndex> {
        let tail = ix.observe();
        if !self.ring.contains(tail) {
            return Err(BadIndex(tail));
        }
        self.tail = tail;
        Ok(self.pending())
    }

    /// The slot [`Consumer::slot`] is taken: move the head past it (not yet published).
    ///
    /// # Panics
    /// If no element waits as last observed.
    pub fn pop(&mut self) {
        assert!(self.pending() > 0, "pop from an empty ring (refresh first)");
        self.head = self.ring.next(self.head);
    }

    /// Publishes the head (Release): the slots taken before are the producer's again.
    pub fn publish(&mut self, ix: &impl Indices) {
        ix.publish(self.head);
    }

    /// Publishes the head, fences, and observes the producer's tail again: the number of
    /// elements that arrived meanwhile. `Ok(0)` means the ring is empty and the producer
    /// will wake this side for the next element (see the module doc).
    pub fn publish_and_recheck(&mut self, ix: &impl Indices) -> Result<u32, BadIndex> {
        self.publish(ix);
        ix.fence();
        self.refresh(ix)
    }

    /// Back to slot 0, published.
    pub fn reset(&mut self, ix: &impl Indices) {
        *self = Consumer::new(self.ring);
        ix.publish(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// Both indices of one ring in one thread: `own` is the endpoint's, `other` the
    /// peer's, swapped to act as the peer.
    struct Local<'a> {
        own: &'a Cell<u32>,
        other: &'a Cell<u32>,
    }

    impl Indices for Local<'_> {
        fn publish(&self, index: u32) {
            self.own.set(index);
        }
        fn observe(&self) -> u32 {
            self.other.get()
        }
        fn fence(&self) {}
    }

    #[test]
    fn elements_pass_once_in_order_and_the_ring_never_overfills() {
        let ring = Ring::new(4).unwrap();
        let (head, tail) = (Cell::new(0), Cell::new(0));
        let (p_ix, c_ix) = (Local { own: &tail, other: &head }, Local { own: &head, other: &tail });
        let (mut p, mut c) = (Producer::new(ring), Consumer::new(ring));
        let mut slots = [0u32; 4];
        let (mut sent, mut got) = (0u32, 0u32);
        for round in 0..50 {
            let want = round % 5;
            let room = p.room(&p_ix, want).unwrap();
            assert!(room <= ring.capacity());
            for _ in 0..want.min(room) {
                sent += 1;
                slots[p.slot() as usize] = sent;
                p.push();
            }
            p.publish(&p_ix);
            let take = (round * 7) % 4;
            c.refresh(&c_ix).unwrap();
            for _ in 0..take.min(c.pending()) {
                got += 1;
                assert_eq!(slots[c.slot() as usize], got);
                c.pop();
            }
            c.publish(&c_ix);
        }
        assert!(got > 20 && sent - got <= ring.capacity());
    }

    #[test]
    fn the_producer_wakes_a_consumer_that_had_drained_everything() {
        let ring = Ring::new(8).unwrap();
        let (head, tail) = (Cell::new(0), Cell::new(0));
        let (p_ix, c_ix) = (Local { own: &tail, other: &head }, Local { own: &head, other: &tail });
        let (mut p, mut c) = (Producer::new(ring), Consumer::new(ring));
        p.push();
        assert!(p.publish_and_check_idle(&p_ix), "an idle consumer is woken");
        p.push();
        assert!(!p.publish_and_check_idle(&p_ix), "a consumer still behind will re-check");
        c.refresh(&c_ix).unwrap();
        c.pop();
        c.pop();
        assert_eq!(c.publish_and_recheck(&c_ix), Ok(0));
        p.push();
        assert!(p.publish_and_check_idle(&p_ix));
    }

    #[test]
    fn a_garbage_index_consumes_and_overwrites_nothing() {
        let ring = Ring::new(8).unwrap();
        let (head, tail) = (Cell::new(0), Cell::new(u32::MAX));
        let c_ix = Local { own: &head, other: &tail };
        let mut c = Consumer::new(ring);
        assert_eq!(c.refresh(&c_ix), Err(BadIndex(u32::MAX)));
        assert_eq!(c.pending(), 0);
        let (head, tail) = (Cell::new(9), Cell::new(0));
        let p_ix = Local { own: &tail, other: &head };
        let mut p = Producer::new(ring);
        for _ in 0..ring.capacity() {
            p.push();
        }
        assert_eq!(p.room(&p_ix, 1), Err(BadIndex(9)));
        assert_eq!(p.free(), 0);
        assert!(p.publish_and_check_idle(&p_ix), "a garbage head wakes the consumer");
    }

    #[test]
    fn reset_returns_both_ends_to_slot_zero() {
        let ring = Ring::new(4).unwrap();
        let (head, tail) = (Cell::new(0), Cell::new(0));
        let p_ix = Local { own: &tail, other: &head };
        let mut p = Producer::new(ring);
        p.push();
        p.publish(&p_ix);
        assert_eq!(tail.get(), 1);
        p.reset(&p_ix);
        assert_eq!((tail.get(), p.slot(), p.unpublished()), (0, 0, 0));
    }
}
