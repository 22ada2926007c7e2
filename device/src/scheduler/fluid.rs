//! DMA transfers whose speed depends on what else is moving: those over DDR, which all
//! get an equal share of the device's bandwidth, and those over the on-chip network,
//! which share it too but each within its own cap. A transfer ends at the first whole
//! cycle at or after the moment its last byte moves.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::{Ordering, Reverse};

use super::JobId;

/// Which instruction a transfer belongs to: (job, core index, instruction index).
pub(super) type Owner = (JobId, u32, u32);

/// Bytes left below this count as moved (floating-point residue).
const MOVED: f64 = 1e-6;

/// Cycles until `bytes` have moved at `rate` bytes per cycle: at least one.
pub(super) fn cycles_for(bytes: f64, rate: f64) -> u64 {
    let exact = bytes / rate;
    let whole = exact as u64;
    let whole = if (whole as f64) < exact { whole + 1 } else { whole };
    whole.max(1)
}

/// An f64 with a total order, for the heap of finishing points.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Work(f64);

impl Eq for Work {}

impl PartialOrd for Work {
    fn partial_cmp(&self, other: &Work) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Work {
    fn cmp(&self, other: &Work) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Transfers that all move at the same rate (DDR: the bandwidth divided equally, capped
/// by a core's DMA rate, a cap every transfer has alike). Instead of stepping each one,
/// one clock counts the bytes every moving transfer has moved since it was last
/// rebased; a transfer is done when the clock reaches the point it was given on
/// entry. Each event then costs a heap operation, not a pass over every transfer.
#[derive(Default)]
pub(super) struct EqualShare {
    moved: f64,
    done_at: BinaryHeap<Reverse<(Work, Owner)>>,
}

/// The clock is moved back to 0 past this many bytes, so that its precision stays far
/// finer than [`MOVED`].
const REBASE: f64 = (1u64 << 24) as f64;

impl EqualShare {
    pub fn len(&self) -> usize {
        self.done_at.len()
    }

    /// The rate each transfer gets when `total` bytes per cycle are shared, at most
    /// `cap` each.
    pub fn rate(&self, total: f64, cap: f64) -> f64 {
        (total / self.len().max(1) as f64).min(cap)
    }

    pub fn start(&mut self, owner: Owner, bytes: u64) {
        self.done_at.push(Reverse((Work(self.moved + bytes as f64), owner)));
    }

    /// Cycles from now until the first transfer ends at `rate`.
    pub fn next_end(&self, rate: f64) -> Option<u64> {
        let Reverse((Work(at), _)) = self.done_at.peek()?;
        Some(cycles_for(at - self.moved, rate))
    }

    /// `cycles` pass at `rate`; the transfers that have moved everything go to `done`.
    pub fn advance(&mut self, cycles: u64, rate: f64, done: &mut Vec<Owner>) {
        if self.done_at.is_empty() {
            self.moved = 0.0;
            return;
        }
        self.moved += rate * cycles as f64;
        while let Some(&Reverse((Work(at), owner))) = self.done_at.peek() {
            if at - self.moved > MOVED {
                break;
            }
            self.done_at.pop();
            done.push(owner);
        }
        if self.moved > REBASE {
            let base = self.moved;
            self.done_at = self.done_at.drain().map(|Reverse((Work(at), o))| Reverse((Work(at - base), o))).collect();
            self.moved = 0.0;
        }
    }

    pub fn remove_job(&mut self, job: JobId) {
        self.done_at.retain(|Reverse((_, owner))| owner.0 != job);
    }

    pub fn clear(&mut self) {
        self.done_at.clear();
        self.moved = 0.0;
    }
}

struct Capped {
    owner: Owner,
    /// Bytes left when the counts were last brought up to date.
    remaining: f64,
    cap: f64,
}

/// Transfers that share a bandwidth equally but each within its own cap (the on-chip
/// network, where a part of a DMA moves at most at its share of the pool rate). Each
/// moves at a constant rate until a transfer starts or ends, so the bytes left are
/// brought up to date only then, and when the first one ends is worked out once per
/// such change rather than at every event of the device.
pub(super) struct CappedShare {
    /// Bytes per cycle shared.
    total: f64,
    moving: Vec<Capped>,
    /// Cycles since the bytes left were brought up to date.
    elapsed: u64,
    /// Cycles from then until the first transfer ends, once worked out.
    first_end: Option<u64>,
}

impl CappedShare {
    pub fn new(total: f64) -> CappedShare {
        CappedShare { total, moving: Vec::new(), elapsed: 0, first_end: None }
    }

    fn share(&self) -> f64 {
        self.total / self.moving.len().max(1) as f64
    }

    /// Brings the bytes left up to date; the transfers that have moved everything go to
    /// `done`.
    fn settle(&mut self, done: &mut Vec<Owner>) {
        if self.elapsed > 0 {
            let share = self.share();
            let cycles = self.elapsed as f64;
            for t in &mut self.moving {
                t.remaining -= share.min(t.cap) * cycles;
            }
            self.elapsed = 0;
        }
        self.moving.retain(|t| {
            let finished = t.remaining <= MOVED;
            if finished {
                done.push(t.owner);
            }
            !finished
        });
        self.first_end = None;
    }

    pub fn start(&mut self, owner: Owner, bytes: u64, cap: f64, done: &mut Vec<Owner>) {
        self.settle(done);
        self.moving.push(Capped { owner, remaining: bytes as f64, cap });
    }

    /// Cycles from now until the first transfer ends.
    pub fn next_end(&mut self) -> Option<u64> {
        if self.moving.is_empty() {
            return None;
        }
        let first = match self.first_end {
            Some(first) => first,
            None => {
                let share = self.share();
                let first = self
                    .moving
                    .iter()
                    .map(|t| cycles_for((t.remaining - MOVED).max(0.0), share.min(t.cap)))
                    .min()
                    .unwrap_or(1);
                self.first_end = Some(first);
                first
            }
        };
        Some(first.saturating_sub(self.elapsed).max(1))
    }

    /// `cycles` pass; the transfers that have moved everything go to `done`.
    pub fn advance(&mut self, cycles: u64, done: &mut Vec<Owner>) {
        if self.moving.is_empty() {
            return;
        }
        self.elapsed += cycles;
        if self.first_end.is_none_or(|first| self.elapsed >= first) {
            self.settle(done);
        }
    }

    pub fn remove_job(&mut self, job: JobId) {
        let mut done = Vec::new();
        self.settle(&mut done);
        self.moving.retain(|t| t.owner.0 != job);
    }

    pub fn clear(&mut self) {
        self.moving.clear();
        self.elapsed = 0;
        self.first_end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_round_up_and_never_reach_zero() {
        assert_eq!(cycles_for(128.0, 64.0), 2);
        assert_eq!(cycles_for(129.0, 64.0), 3);
        assert_eq!(cycles_for(0.5, 64.0), 1);
        assert_eq!(cycles_for(0.0, 64.0), 1);
    }

    #[test]
    fn equal_shares_finish_in_order_of_size_and_the_rate_follows_the_count() {
        let mut ddr = EqualShare::default();
        ddr.start((1, 0, 0), 1000);
        ddr.start((1, 1, 0), 400);
        assert_eq!(ddr.rate(100.0, 64.0), 50.0);
        assert_eq!(ddr.next_end(50.0), Some(8));
        let mut done = Vec::new();
        ddr.advance(8, 50.0, &mut done);
        assert_eq!(done, [(1, 1, 0)]);
        // Alone now: the cap, not half the bandwidth.
        assert_eq!(ddr.rate(100.0, 64.0), 64.0);
        assert_eq!(ddr.next_end(64.0), Some(10), "600 bytes left at 64 per cycle");
        ddr.advance(10, 64.0, &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(ddr.len(), 0);
    }

    #[test]
    fn the_clock_rebases_without_losing_precision() {
        let mut ddr = EqualShare::default();
        let mut done = Vec::new();
        ddr.start((1, 0, 0), u64::MAX >> 20);
        for i in 0..200u64 {
            ddr.start((2, 0, i as u32), 1 << 20);
            let rate = ddr.rate(64.0, 64.0);
            let before = done.len();
            while done.len() == before {
                let cycles = ddr.next_end(rate).unwrap();
                ddr.advance(cycles, rate, &mut done);
            }
            assert_eq!(done.last(), Some(&(2, 0, i as u32)));
        }
        assert!(ddr.moved < REBASE);
    }

    #[test]
    fn capped_transfers_each_keep_within_their_cap() {
        let mut noc = CappedShare::new(100.0);
        let mut done = Vec::new();
        noc.start((1, 0, 0), 300, 10.0, &mut done);
        noc.start((1, 1, 0), 300, 1000.0, &mut done);
        // Shares of 50: the first is held to 10 per cycle.
        assert_eq!(noc.next_end(), Some(6));
        noc.advance(2, &mut done);
        assert_eq!(noc.next_end(), Some(4), "the same end, 2 cycles nearer");
        noc.advance(4, &mut done);
        assert_eq!(done, [(1, 1, 0)]);
        assert_eq!(noc.next_end(), Some(24), "240 bytes left at its cap of 10");
        // A transfer joining halves the share of the uncapped one only.
        noc.start((2, 0, 0), 2000, 1000.0, &mut done);
        assert_eq!(noc.next_end(), Some(24), "the capped one still ends first");
        noc.advance(24, &mut done);
        assert_eq!(done, [(1, 1, 0), (1, 0, 0)]);
        assert_eq!(noc.next_end(), Some(8), "2000 - 24 x 50 bytes left, alone at the whole 100");
    }
}
