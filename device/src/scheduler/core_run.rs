//! One core of a running program and the rule for when its next instruction may start.
//!
//! Instructions issue in order. The next one starts at the earliest moment at or after
//! the previous one's start when its engine has room, nothing in flight on the core that
//! overlaps its bytes in a conflicting way is still running, and no sync fence is
//! pending; signals, barriers and the end wait for everything in flight. Every
//! instruction's end is known when it starts except a DMA's over a shared path (DDR, the
//! on-chip network), whose speed depends on what else moves. So a core runs ahead of
//! the device clock on its own until the next instruction depends on such a transfer,
//! waits on a counter or arrives at a barrier; only those points need the device-wide
//! order of events.

use alloc::vec::Vec;

use super::plan::{Access, Issue, NOT_FAST};
use super::CoreStats;
use crate::nsp::Engine;

/// One instruction in flight on a core.
pub(super) struct InFlight {
    pub start: u64,
    /// When it ends; [`UNKNOWN`] while a part of it still moves over a shared path.
    pub end: u64,
    /// When its part that moves inside the core ends (its start if none).
    pub local_end: u64,
    /// The earliest it can end: its end if known, else when its bytes would have moved
    /// at the most its paths allow.
    pub lower_bound: u64,
    pub op: u32,
    pub engine: Engine,
    /// Parts still moving over a shared path.
    pub moving: u8,
}

impl InFlight {
    /// An instruction running from `start` to `end`, both known.
    pub fn fixed(op: u32, engine: Engine, start: u64, end: u64) -> InFlight {
        InFlight { start, end, local_end: end, lower_bound: end, op, engine, moving: 0 }
    }
}

/// Where a core stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Issues as far as it can.
    Running,
    /// Its next instruction waits for a transfer over a shared path to end.
    Moving,
    /// At a Wait whose counter is checked when the device clock reaches `at`.
    WaitCheck { at: u64 },
    /// At a Wait whose counter was short; a signal to it will let it go.
    WaitCounter,
    /// Arrived at a barrier at `at`.
    AtBarrier { at: u64 },
    /// Issued its End at `at`.
    Ended { at: u64 },
}

pub(super) struct CoreRun {
    pub pc: usize,
    /// When the latest instruction started: the next one starts no earlier.
    pub clock: u64,
    pub in_flight: Vec<InFlight>,
    /// Nothing in flight ends later than this; [`UNKNOWN`] while an end is not known.
    busy_until: u64,
    pub state: State,
    pub stats: CoreStats,
}

/// Why a core cannot tell yet when its next instruction starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Blocked {
    /// It waits for a transfer over a shared path to end.
    Transfer,
    /// It waits for a transfer to end or for the device clock to reach this cycle,
    /// whichever comes first.
    Until(u64),
}

/// The end of an instruction with a transfer over a shared path still moving: not known
/// yet (later than any known one).
pub(super) const UNKNOWN: u64 = u64::MAX;

impl CoreRun {
    /// A core starting at `start` with `stats` counted already.
    pub fn new(stats: CoreStats, start: u64) -> CoreRun {
        CoreRun { pc: 0, clock: start, in_flight: Vec::new(), busy_until: start, state: State::Running, stats }
    }

    /// The earliest start of the instruction at `pc` (`step`), whose core's steps touch
    /// `accesses`; or, while that depends on a transfer over a shared path, [`Blocked`].
    /// The device clock is at `now`: a transfer over a shared path that has not ended
    /// ends after it.
    #[inline]
    pub fn earliest(&self, step: &Issue, accesses: &[Access], now: u64) -> Result<u64, Blocked> {
        let mut t = self.clock;
        // The same engine's instructions still in flight: how many, the first to end, and
        // whether one's end is not known. No more than `room` are ever in flight (an
        // instruction only starts where there is room), so a full engine frees a place
        // when its first one ends.
        let (mut same, mut first, mut unknown_from) = (0u32, UNKNOWN, UNKNOWN);
        for f in &self.in_flight {
            let end = f.end;
            if end <= self.clock {
                continue;
            }
            if end > t
                && (step.waits_all
                    || f.engine == Engine::Sync
                    || step.conflicts.with(self.pc, f.op as usize).unwrap_or_else(|| {
                        accesses
                            .get(f.op as usize)
                            .zip(accesses.get(self.pc))
                            .is_some_and(|(theirs, mine)| theirs.conflicts(mine))
                    }))
            {
                if end == UNKNOWN {
                    return Err(Blocked::Transfer);
                }
                t = end;
            }
            if f.engine == step.engine {
                same += 1;
                if end == UNKNOWN {
                    // It has not ended by the device clock, nor can it before its bound.
                    unknown_from = unknown_from.min(f.lower_bound.max(now + 1));
                } else {
                    first = first.min(end);
                }
            }
        }
        if same >= u32::from(step.room) {
            if first == UNKNOWN {
                return Err(Blocked::Transfer);
            }
            // A transfer whose end is not known yet might free the place before `first`:
            // look again when the device clock reaches `first`, or when it ends.
            if unknown_from < first && first > t {
                return Err(Blocked::Until(first));
            }
            t = t.max(first);
        }
        Ok(t)
    }

    /// Issues the instructions from `pc` on while each is a compute or DMA instruction of
    /// fixed cost ([`Issue::fast_cycles`]) whose start is known: their statistics are the
    /// plan's, so starting them is all there is to do. Returns how many it issued, and
    /// the next instruction's start (or why it is not known) if there is one.
    pub fn issue_fixed(
        &mut self,
        issues: &[Issue],
        accesses: &[Access],
        now: u64,
    ) -> (u64, Option<Result<u64, Blocked>>) {
        let mut issued = 0;
        while let Some(step) = issues.get(self.pc) {
            let t = match self.earliest(step, accesses, now) {
                Ok(t) if step.fast_cycles != NOT_FAST => t,
                other => return (issued, Some(other)),
            };
            self.begin(t);
            let end = t + u64::from(step.fast_cycles);
            self.push(InFlight::fixed(self.pc as u32, step.engine, t, end));
            self.pc += 1;
            self.stats.instructions += 1;
            issued += 1;
        }
        (issued, None)
    }

    /// Bookkeeping for an instruction starting at `t`: the time with nothing in flight
    /// before it was a stall; instructions that ended by then leave the list.
    #[inline]
    pub fn begin(&mut self, t: u64) {
        // (Never while an end is not known.)
        if t > self.busy_until {
            self.stats.stall_cycles += t - self.busy_until;
        }
        self.clock = t;
        self.in_flight.retain(|f| f.end > t);
    }

    /// An instruction started: it is in flight until its end ([`UNKNOWN`]: not known
    /// yet).
    #[inline]
    pub fn push(&mut self, f: InFlight) {
        self.busy_until = self.busy_until.max(f.end);
        self.in_flight.push(f);
    }

    /// Everything in flight has ended by `t` (a barrier arrival): idle from then.
    pub fn idle_from(&mut self, t: u64) {
        self.busy_until = t;
    }

    /// A shared-path part of in-flight instruction `op` ended at `now`. Returns the
    /// instruction's start and end once its last part is done.
    pub fn part_done(&mut self, op: u32, now: u64) -> Option<(u64, u64)> {
        let f = self.in_flight.iter_mut().find(|f| f.op == op)?;
        f.moving -= 1;
        if f.moving > 0 {
            return None;
        }
        let end = now.max(f.local_end);
        f.end = end;
        let start = f.start;
        // Known again once no other end is unknown.
        let last = self.in_flight.iter().map(|f| f.end).max().unwrap_or(end);
        self.busy_until = last.max(self.clock);
        Some((start, end))
    }
}
