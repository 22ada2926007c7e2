//! What the scheduler needs to know of every instruction, worked out once per program:
//! its engine, its profile class, the bytes it reads and writes (for hazards), the bytes
//! it writes (for statistics), the cycles it takes under the device's cost model and,
//! for a DMA, how many bytes move over which path.

use alloc::vec::Vec;
use core::ops::Deref;

use crate::nsp::{self, CostModel, Engine, OpClass, DMA_QUEUES, HVX_THREADS};
use aicsim_abi::isa::{Op, Space, Tensor};

use super::fluid::cycles_for;
use super::CoreStats;

/// A program's per-core instruction streams together with their `Step`s under one
/// cost model. Built once when a program is loaded and shared by every run of it.
#[derive(Debug)]
pub struct Plan {
    streams: Vec<Vec<Op>>,
    steps: Vec<Vec<Step>>,
    /// Each step's bytes: the hazard check reads them for an instruction in flight
    /// further back than [`Conflicts`] reaches.
    accesses: Vec<Vec<Access>>,
    /// Per core, per step: what issuing it reads (see [`Issue`]).
    issues: Vec<Vec<Issue>>,
    cost: CostModel,
    /// Per core, the statistics of every instruction whose cycles do not depend on what
    /// else runs: the same in every run, so a run starts from them and adds only the
    /// transfers over shared paths.
    fixed: Vec<CoreStats>,
}

impl Plan {
    pub fn new(streams: Vec<Vec<Op>>, cost: &CostModel) -> Plan {
        let steps: Vec<Vec<Step>> = streams.iter().map(|s| s.iter().map(|op| Step::of(op, cost)).collect()).collect();
        let fixed = steps
            .iter()
            .map(|core| {
                let mut stats = CoreStats::default();
                for step in core {
                    if let Some(cycles) = step.fixed_cycles() {
                        super::count_instruction(&mut stats, step, cycles);
                    }
                }
                stats
            })
            .collect();
        let accesses: Vec<Vec<Access>> = streams.iter().map(|core| core.iter().map(Access::of).collect()).collect();
        let issues = steps
            .iter()
            .zip(&accesses)
            .map(|(steps, accesses)| {
                steps.iter().zip(Conflicts::of(accesses)).map(|(step, conflicts)| Issue::of(step, conflicts)).collect()
            })
            .collect();
        Plan { streams, steps, accesses, issues, cost: *cost, fixed }
    }

    /// The statistics of core `core`'s fixed-cost instructions (see [`Step::fixed_cycles`]).
    pub(super) fn fixed_stats(&self, core: usize) -> CoreStats {
        self.fixed.get(core).cloned().unwrap_or_default()
    }

    /// The cost model the steps' cycles were worked out with.
    pub fn cost(&self) -> &CostModel {
        &self.cost
    }

    pub fn streams(&self) -> &[Vec<Op>] {
        &self.streams
    }

    pub(super) fn step(&self, core: usize, index: usize) -> Option<&Step> {
        self.steps.get(core)?.get(index)
    }

    /// Core `core`'s steps (empty past the last core).
    pub(super) fn core_steps(&self, core: usize) -> &[Step] {
        self.steps.get(core).map_or(&[], Vec::as_slice)
    }

    /// Core `core`'s steps' byte ranges (empty past the last core).
    pub(super) fn core_accesses(&self, core: usize) -> &[Access] {
        self.accesses.get(core).map_or(&[], Vec::as_slice)
    }

    /// What issuing each of core `core`'s steps reads.
    pub(super) fn core_issues(&self, core: usize) -> &[Issue] {
        self.issues.get(core).map_or(&[], Vec::as_slice)
    }
}

impl Deref for Plan {
    type Target = [Vec<Op>];

    fn deref(&self) -> &[Vec<Op>] {
        &self.streams
    }
}

/// How an instruction behaves in the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Takes [`Step::cycles`] on its engine.
    Compute,
    /// Moves bytes; ends when they have all moved.
    Dma(Paths),
    Signal {
        counter: u8,
        value: u16,
    },
    Wait {
        counter: u8,
        value: u16,
    },
    Barrier,
    End,
}

/// Where a DMA's bytes go once its setup is over: over DDR; or, for a transfer to or from
/// the on-chip pool, a copy inside the core for the bytes it holds and the on-chip
/// network for those other cores hold, the two sharing the pool rate in proportion to
/// their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Paths {
    /// Whether the bytes move over DDR (a transfer not to or from the pool).
    pub ddr: bool,
    /// Bytes over DDR (0 for a pool transfer).
    pub ddr_bytes: u64,
    /// Cycles of the copy inside the core, if the transfer has one.
    pub local_cycles: Option<u64>,
    /// Bytes over the on-chip network.
    pub noc_bytes: u64,
    /// All the transfer's bytes (the network part's cap is its share of the pool rate).
    pub bytes: u64,
}

impl Paths {
    fn of(bytes: u64, peer: u64, onchip: bool, cost: &CostModel) -> Paths {
        if !onchip {
            return Paths { ddr: true, ddr_bytes: bytes, local_cycles: None, noc_bytes: 0, bytes };
        }
        let peer = peer.min(bytes);
        let local = bytes - peer;
        let local_cycles = (local > 0 || peer == 0).then(|| {
            let pool = cost.pool_bytes_per_cycle.max(1) as f64;
            cycles_for(local as f64, pool * local.max(1) as f64 / bytes.max(1) as f64)
        });
        Paths { ddr: false, ddr_bytes: 0, local_cycles, noc_bytes: peer, bytes }
    }
}

/// One instruction as the scheduler sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub engine: Engine,
    pub class: OpClass,
    pub action: Action,
    pub out_bytes: u64,
    /// Cycles on its engine (a DMA: its setup).
    pub cycles: u64,
    /// How many instructions of its engine may be in flight with it ([`NO_PLACE`]: it
    /// takes no engine place).
    pub room: u8,
    /// It starts only once everything in flight on its core has ended (signal, barrier,
    /// end).
    pub waits_all: bool,
    /// Its cycles whatever else runs, if they do not depend on that
    /// ([`Step::fixed_cycles`]).
    pub fixed: Option<u64>,
}

/// [`Step::room`] of an instruction that takes no engine place.
pub(super) const NO_PLACE: u8 = u8::MAX;

/// What the scheduler reads of an instruction to issue it: the hazard and room checks,
/// and, for a compute or DMA instruction of fixed cost, all it needs. 16 bytes, so that
/// a core's run through its program streams through few cache lines.
#[derive(Clone, Copy, Debug)]
pub(super) struct Issue {
    /// Which of the instructions just before it it conflicts with.
    pub conflicts: Conflicts,
    /// Its cycles, if it is a compute or DMA instruction of fixed cost; [`NOT_FAST`]
    /// otherwise (it issues through [`Step`]).
    pub fast_cycles: u32,
    pub engine: Engine,
    /// See [`Step::room`].
    pub room: u8,
    pub waits_all: bool,
}

const _: () = assert!(core::mem::size_of::<Issue>() == 16);

/// [`Issue::fast_cycles`] of an instruction that is not both fixed-cost and a compute or
/// DMA instruction (or takes more cycles than fit).
pub(super) const NOT_FAST: u32 = u32::MAX;

impl Issue {
    fn of(step: &Step, conflicts: Conflicts) -> Issue {
        let fast_cycles = match (step.action, step.fixed) {
            (Action::Compute | Action::Dma(_), Some(c)) => u32::try_from(c).ok().filter(|&c| c != NOT_FAST),
            _ => None,
        };
        Issue {
            conflicts,
            fast_cycles: fast_cycles.unwrap_or(NOT_FAST),
            engine: step.engine,
            room: step.room,
            waits_all: step.waits_all,
        }
    }
}

impl Step {
    /// The cycles the instruction takes whatever else runs: everything but a transfer
    /// over DDR or the network (and the End, which takes none and is not counted).
    pub fn fixed_cycles(&self) -> Option<u64> {
        self.fixed
    }

    fn fixed_of(action: Action, cycles: u64) -> Option<u64> {
        match action {
            Action::End => None,
            Action::Dma(p) if p.ddr || p.noc_bytes > 0 => None,
            Action::Dma(p) => Some(cycles + p.local_cycles.unwrap_or(0)),
            _ => Some(cycles),
        }
    }

    fn of(op: &Op, cost: &CostModel) -> Step {
        let action = match *op {
            Op::DmaIn { src, peer_bytes, .. } => {
                Action::Dma(Paths::of(src.packed_bytes(), u64::from(peer_bytes), src.space == Space::Pool, cost))
            }
            Op::DmaOut { dst, .. } => Action::Dma(Paths::of(dst.packed_bytes(), 0, dst.space == Space::Pool, cost)),
            Op::Gather { dst, table, .. } => {
                Action::Dma(Paths::of(dst.packed_bytes(), 0, table.space == Space::Pool, cost))
            }
            Op::Scatter { dst, src, .. } => {
                Action::Dma(Paths::of(src.packed_bytes(), 0, dst.space == Space::Pool, cost))
            }
            Op::Signal { counter, value } => Action::Signal { counter, value },
            Op::Wait { counter, value } => Action::Wait { counter, value },
            Op::Barrier => Action::Barrier,
            Op::End => Action::End,
            _ => Action::Compute,
        };
        let engine = nsp::engine(op);
        let places = |n: u32| u8::try_from(n).unwrap_or(NO_PLACE - 1);
        let room = match action {
            Action::Compute | Action::Dma(_) => match engine {
                Engine::Hvx => places(HVX_THREADS),
                Engine::Dma => places(DMA_QUEUES),
                _ => 1,
            },
            _ => NO_PLACE,
        };
        let cycles = cost.cycles(op);
        Step {
            engine,
            class: nsp::op_class(op),
            action,
            out_bytes: nsp::output_bytes(op),
            cycles,
            room,
            waits_all: matches!(action, Action::End | Action::Barrier | Action::Signal { .. }),
            fixed: Step::fixed_of(action, cycles),
        }
    }
}

/// Which of the [`Conflicts::REACH`] instructions just before one it conflicts with:
/// bit `k` is the one `k + 1` places earlier. Worked out once per program, so the hazard
/// check of an instruction against one in flight is a bit test, not seven range tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Conflicts(u64);

impl Conflicts {
    pub const REACH: usize = 64;

    fn of(accesses: &[Access]) -> Vec<Conflicts> {
        (0..accesses.len())
            .map(|i| {
                let mut bits = 0u64;
                for k in 0..Conflicts::REACH.min(i) {
                    if accesses[i].conflicts(&accesses[i - 1 - k]) {
                        bits |= 1 << k;
                    }
                }
                Conflicts(bits)
            })
            .collect()
    }

    /// Whether instruction `index` conflicts with the earlier `other`, if `other` is
    /// within reach.
    pub fn with(self, index: usize, other: usize) -> Option<bool> {
        let k = index.checked_sub(other)?.checked_sub(1)?;
        (k < Conflicts::REACH).then(|| self.0 >> k & 1 == 1)
    }
}

/// The bytes an instruction reads and writes, as half-open ranges of one address space
/// in which VTCM lies above DDR (which also holds the pool's bytes); an unused range is
/// empty. Instructions of one core conflict when one writes what the other reads or
/// writes (read-after-write, write-after-read, write-after-write); only instructions of
/// the same core are compared, so a VTCM range needs no core number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Access {
    /// Three read ranges, then the written range: `[start, end)` pairs.
    ranges: [(u64, u64); 4],
}

/// Where VTCM starts in the combined address space (above any DDR offset).
const VTCM_BASE: u64 = 1 << 62;

impl Access {
    fn of(op: &Op) -> Access {
        let r = |t: &Tensor| {
            let base = if t.space == Space::Vtcm { VTCM_BASE } else { 0 };
            let start = base.saturating_add(t.offset);
            (start, start.saturating_add(t.span_bytes().unwrap_or(0)))
        };
        let none = (0, 0);
        let ranges = match op {
            Op::DmaIn { dst, src, .. } | Op::DmaOut { dst, src } => [r(src), none, none, r(dst)],
            Op::Gather { dst, table, indices } => [r(table), r(indices), none, r(dst)],
            Op::Scatter { dst, src, indices } => [r(src), r(indices), none, r(dst)],
            Op::MatMul { dst, a, b, accumulate, .. } => [r(a), r(b), if *accumulate { r(dst) } else { none }, r(dst)],
            Op::Conv2d { dst, input, weight, accumulate, .. } => {
                [r(input), r(weight), if *accumulate { r(dst) } else { none }, r(dst)]
            }
            Op::Binary { dst, a, b, .. } => [r(a), r(b), none, r(dst)],
            Op::Convert { dst, src, scales, .. } => [r(src), scales.as_ref().map_or(none, r), none, r(dst)],
            Op::Unary { dst, src, .. }
            | Op::Pool { dst, src, .. }
            | Op::GlobalAvgPool { dst, src }
            | Op::Softmax { dst, src }
            | Op::LayerNorm { dst, src, .. }
            | Op::Reduce { dst, src, .. } => [r(src), none, none, r(dst)],
            Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => [none; 4],
        };
        Access { ranges }
    }

    pub fn conflicts(&self, other: &Access) -> bool {
        let overlap = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
        let (mine, theirs) = (self.ranges[3], other.ranges[3]);
        overlap(mine, theirs)
            | overlap(mine, other.ranges[0])
            | overlap(mine, other.ranges[1])
            | overlap(mine, other.ranges[2])
            | overlap(theirs, self.ranges[0])
            | overlap(theirs, self.ranges[1])
            | overlap(theirs, self.ranges[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aicsim_abi::isa::{DType, UnaryKind};
    use alloc::vec;

    #[test]
    fn the_conflict_bits_say_what_the_range_test_says_within_reach_and_nothing_beyond() {
        // Unary ops over overlapping and disjoint VTCM windows, and DDR loads: every
        // kind of overlap (read after write, write after read, write after write, none).
        let ops: Vec<Op> = (0..150u64)
            .map(|i| {
                let at = |k: u64| Tensor::vtcm((i * 7 + k) % 40 * 64, DType::F16, &[64]);
                if i % 5 == 0 {
                    Op::DmaIn {
                        dst: at(3),
                        src: Tensor::ddr(i % 9 * 64, DType::F16, &[64]),
                        multicast: 0,
                        peer_bytes: 0,
                    }
                } else {
                    Op::Unary { kind: UnaryKind::Relu, dst: at(1), src: at(0) }
                }
            })
            .collect();
        let plan = Plan::new(vec![ops], &CostModel::default());
        let (accesses, issues) = (plan.core_accesses(0), plan.core_issues(0));
        let mut seen = [0usize; 2];
        for i in 0..accesses.len() {
            for j in 0..i {
                let exact = accesses[i].conflicts(&accesses[j]);
                match issues[i].conflicts.with(i, j) {
                    Some(bit) => {
                        assert_eq!(bit, exact, "{i} against {j}");
                        seen[usize::from(bit)] += 1;
                    }
                    None => assert!(i - j > Conflicts::REACH, "{i} against {j} is within reach"),
                }
            }
            assert_eq!(issues[i].conflicts.with(i, i), None, "not against itself");
        }
        assert!(seen[0] > 100 && seen[1] > 100, "both answers occur: {seen:?}");
    }
}
