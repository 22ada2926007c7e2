//! What the scheduler needs to know of every instruction, worked out once per program:
//! its engine, its profile class, the bytes it reads and writes (for hazards), the bytes
//! it writes (for statistics) and, for a DMA, how many bytes move over which path.

use alloc::vec::Vec;
use core::ops::Deref;

use crate::isa::{Op, Space, Tensor};
use crate::nsp::{self, Engine, OpClass};

/// A program's per-core instruction streams together with their [`Step`]s. Built once
/// when a program is loaded and shared by every run of it.
#[derive(Debug)]
pub struct Plan {
    streams: Vec<Vec<Op>>,
    steps: Vec<Vec<Step>>,
}

impl Plan {
    pub fn new(streams: Vec<Vec<Op>>) -> Plan {
        let steps = streams.iter().map(|s| s.iter().map(Step::of).collect()).collect();
        Plan { streams, steps }
    }

    pub fn streams(&self) -> &[Vec<Op>] {
        &self.streams
    }

    pub(super) fn step(&self, core: usize, index: usize) -> Option<&Step> {
        self.steps.get(core)?.get(index)
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
    /// Takes fixed cycles on its engine.
    Compute,
    /// Moves `bytes` (of which `peer` are held by other cores, for a pool read); ends
    /// when they have moved.
    Dma { bytes: u64, peer: u64, onchip: bool },
    Signal { counter: u8, value: u16 },
    Wait { counter: u8, value: u16 },
    Barrier,
    End,
}

/// One instruction as the scheduler sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub engine: Engine,
    pub class: OpClass,
    pub action: Action,
    pub access: Access,
    pub out_bytes: u64,
}

impl Step {
    fn of(op: &Op) -> Step {
        let action = match *op {
            Op::DmaIn { src, peer_bytes, .. } => {
                Action::Dma { bytes: src.packed_bytes(), peer: u64::from(peer_bytes), onchip: src.space == Space::Pool }
            }
            Op::DmaOut { dst, .. } => Action::Dma { bytes: dst.packed_bytes(), peer: 0, onchip: dst.space == Space::Pool },
            Op::Signal { counter, value } => Action::Signal { counter, value },
            Op::Wait { counter, value } => Action::Wait { counter, value },
            Op::Barrier => Action::Barrier,
            Op::End => Action::End,
            _ => Action::Compute,
        };
        Step {
            engine: nsp::engine(op),
            class: nsp::op_class(op),
            action,
            access: Access::of(op),
            out_bytes: nsp::output_bytes(op),
        }
    }
}

/// Whose bytes a range addresses: the running core's VTCM, or the activation's DDR
/// (which also holds the pool's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Vtcm,
    Ddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    region: Region,
    start: u64,
    end: u64,
}

impl Range {
    fn of(t: &Tensor) -> Range {
        let region = if t.space == Space::Vtcm { Region::Vtcm } else { Region::Ddr };
        Range { region, start: t.offset, end: t.offset + t.span_bytes().unwrap_or(0) }
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.region == other.region && self.start < other.end && other.start < self.end
    }
}

/// The bytes an instruction reads and writes. Instructions of one core conflict when
/// one writes what the other reads or writes (read-after-write, write-after-read,
/// write-after-write); only instructions of the same core are compared, so a VTCM
/// range needs no core number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Access {
    reads: [Option<Range>; 3],
    write: Option<Range>,
}

impl Access {
    fn of(op: &Op) -> Access {
        let r = |t: &Tensor| Some(Range::of(t));
        match op {
            Op::DmaIn { dst, src, .. } | Op::DmaOut { dst, src } => {
                Access { reads: [r(src), None, None], write: r(dst) }
            }
            Op::MatMul { dst, a, b, accumulate } => {
                Access { reads: [r(a), r(b), if *accumulate { r(dst) } else { None }], write: r(dst) }
            }
            Op::Conv2d { dst, input, weight, accumulate, .. } => {
                Access { reads: [r(input), r(weight), if *accumulate { r(dst) } else { None }], write: r(dst) }
            }
            Op::Binary { dst, a, b, .. } => Access { reads: [r(a), r(b), None], write: r(dst) },
            Op::Unary { dst, src, .. }
            | Op::Convert { dst, src, .. }
            | Op::Pool { dst, src, .. }
            | Op::GlobalAvgPool { dst, src }
            | Op::Softmax { dst, src }
            | Op::LayerNorm { dst, src, .. }
            | Op::Reduce { dst, src, .. } => Access { reads: [r(src), None, None], write: r(dst) },
            Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => Access::default(),
        }
    }

    pub fn conflicts(&self, other: &Access) -> bool {
        let hits = |w: &Option<Range>, list: &[Option<Range>]| {
            w.as_ref().is_some_and(|w| list.iter().flatten().any(|x| x.overlaps(w)))
        };
        hits(&self.write, &other.reads) || hits(&other.write, &self.reads) || hits(&self.write, &[other.write])
    }
}
