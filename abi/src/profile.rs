//! The profile of one program run as the device hands it to the host: a header, one
//! record per core (busy and stall cycles, per op class figures), and, when the run was
//! traced, one record per instruction. Little-endian Pod records; decoding checks every
//! count against the bytes it was given. The statistics types themselves are here too:
//! the device's scheduler fills them, the host's tools read them.

use alloc::vec::Vec;
use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// The engine an instruction occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Dma = 0,
    Hmx = 1,
    Hvx = 2,
    Sync = 3,
}

/// Number of [`Engine`]s.
pub const ENGINES: usize = 4;

/// Classes of operations, the rows of a per-core profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    CopyToVtcm = 0,
    CopyFromVtcm = 1,
    MatMul = 2,
    Convolution = 3,
    Elementwise = 4,
    Activation = 5,
    Convert = 6,
    Pool = 7,
    Softmax = 8,
    LayerNorm = 9,
    Reduce = 10,
    Sync = 11,
}

/// Number of [`OpClass`]es.
pub const OP_CLASSES: usize = 12;

impl OpClass {
    pub const ALL: [OpClass; OP_CLASSES] = [
        OpClass::CopyToVtcm,
        OpClass::CopyFromVtcm,
        OpClass::MatMul,
        OpClass::Convolution,
        OpClass::Elementwise,
        OpClass::Activation,
        OpClass::Convert,
        OpClass::Pool,
        OpClass::Softmax,
        OpClass::LayerNorm,
        OpClass::Reduce,
        OpClass::Sync,
    ];

    /// The op name a profile shows for this class.
    pub fn name(self) -> &'static str {
        match self {
            OpClass::CopyToVtcm => "aiccopytovtcm",
            OpClass::CopyFromVtcm => "aiccopyfromvtcm",
            OpClass::MatMul => "aicmatmul",
            OpClass::Convolution => "aicconvolution",
            OpClass::Elementwise => "aicelementwise",
            OpClass::Activation => "aicactivation",
            OpClass::Convert => "aicconvert",
            OpClass::Pool => "aicpool",
            OpClass::Softmax => "aicsoftmax",
            OpClass::LayerNorm => "aiclayernorm",
            OpClass::Reduce => "aicreduce",
            OpClass::Sync => "sync",
        }
    }
}

/// Cycles, count and output bytes of one op class on one core.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClassStats {
    pub cycles: u64,
    pub count: u64,
    pub out_bytes: u64,
    /// Sum over ops that write output of their cycles per KiB written (rounded).
    pub cycles_per_kib_sum: u64,
    /// Sum of the squares of the same, for its standard deviation.
    pub cycles_per_kib_sq_sum: u64,
}

impl ClassStats {
    /// Mean and standard deviation of cycles per KiB over the ops that wrote output.
    pub fn cycles_per_kib(&self) -> (f64, f64) {
        let writers = if self.out_bytes == 0 { 0 } else { self.count };
        if writers == 0 {
            return (0.0, 0.0);
        }
        let n = writers as f64;
        let mean = self.cycles_per_kib_sum as f64 / n;
        let var = (self.cycles_per_kib_sq_sum as f64 / n - mean * mean).max(0.0);
        (mean, libm::sqrt(var))
    }
}

/// What one core did during one program run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Physical core id.
    pub core: u32,
    /// Busy cycles per [`Engine`] (HVX: summed over threads).
    pub busy: [u64; ENGINES],
    /// Cycles with nothing in flight while the core had not finished (waiting on
    /// another core, or on a hazard).
    pub stall_cycles: u64,
    /// Per [`OpClass`].
    pub classes: [ClassStats; OP_CLASSES],
    /// Instructions executed.
    pub instructions: u64,
}

/// One program run in detail: per core, per op class, and (traced) per instruction.
/// Every run also leaves a [`crate::run_record::RunRecord`], the summary in shared
/// memory; the profile is kept for the latest runs and handed over on request (the
/// MANAGE "read profile" message). The driver's PERF_STATS_BO answer
/// (`PerfStatsEntry`, qaic's name) is the host-side queue figures of a buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunProfile {
    pub start_cycle: u64,
    pub end_cycle: u64,
    pub cores: Vec<CoreStats>,
    /// Bytes this run read from or wrote to DDR.
    pub ddr_bytes: u64,
    /// Every instruction's interval, when tracing is on (the scheduler's tracing).
    pub trace: Vec<TraceEvent>,
}

impl RunProfile {
    /// Cycles from the run's start to its end.
    pub fn cycles(&self) -> u64 {
        self.end_cycle - self.start_cycle
    }
}

/// One instruction's execution, for a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Index of the core within the program.
    pub core: u32,
    pub engine: Engine,
    pub class: OpClass,
    /// Instruction index in the core's stream.
    pub index: u32,
    pub start_cycle: u64,
    pub end_cycle: u64,
}

const MAGIC: u32 = u32::from_le_bytes(*b"PROF");

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    magic: u32,
    cores: u32,
    events: u32,
    reserved: u32,
    seq: u64,
    start_cycle: u64,
    end_cycle: u64,
    ddr_bytes: u64,
}
const _: () = assert!(size_of::<Header>() == 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct CoreRecord {
    core: u32,
    reserved: u32,
    busy: [u64; ENGINES],
    stall_cycles: u64,
    instructions: u64,
    classes: [ClassStats; OP_CLASSES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct TraceRecord {
    core: u32,
    engine: u8,
    class: u8,
    reserved0: u16,
    index: u32,
    reserved1: u32,
    start_cycle: u64,
    end_cycle: u64,
}
const _: () = assert!(size_of::<TraceRecord>() == 32);

/// Bytes [`encode`] produces for `stats`.
pub fn encoded_len(stats: &RunProfile) -> usize {
    size_of::<Header>() + stats.cores.len() * size_of::<CoreRecord>() + stats.trace.len() * size_of::<TraceRecord>()
}

/// The wire form of run `seq`'s statistics.
pub fn encode(seq: u64, stats: &RunProfile) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(stats));
    let header = Header {
        magic: MAGIC,
        cores: stats.cores.len() as u32,
        events: stats.trace.len() as u32,
        reserved: 0,
        seq,
        start_cycle: stats.start_cycle,
        end_cycle: stats.end_cycle,
        ddr_bytes: stats.ddr_bytes,
    };
    out.extend_from_slice(bytemuck::bytes_of(&header));
    for c in &stats.cores {
        let rec = CoreRecord {
            core: c.core,
            reserved: 0,
            busy: c.busy,
            stall_cycles: c.stall_cycles,
            instructions: c.instructions,
            classes: c.classes,
        };
        out.extend_from_slice(bytemuck::bytes_of(&rec));
    }
    for e in &stats.trace {
        let rec = TraceRecord {
            core: e.core,
            engine: e.engine as u8,
            class: e.class as u8,
            reserved0: 0,
            index: e.index,
            reserved1: 0,
            start_cycle: e.start_cycle,
            end_cycle: e.end_cycle,
        };
        out.extend_from_slice(bytemuck::bytes_of(&rec));
    }
    out
}

/// Why profile bytes do not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile is {len} bytes, its header and records need {need}")]
    Truncated { len: usize, need: usize },
    #[error("not a run profile (bad magic)")]
    BadMagic,
    #[error("trace record {0} names an unknown engine or op class")]
    BadRecord(usize),
}

fn engine(raw: u8) -> Option<Engine> {
    Some(match raw {
        0 => Engine::Dma,
        1 => Engine::Hmx,
        2 => Engine::Hvx,
        3 => Engine::Sync,
        _ => return None,
    })
}

/// Decodes [`encode`]'s output back into the run's sequence number and statistics.
pub fn decode(bytes: &[u8]) -> Result<(u64, RunProfile), ProfileError> {
    let hs = size_of::<Header>();
    let header: Header =
        bytemuck::pod_read_unaligned(bytes.get(..hs).ok_or(ProfileError::Truncated { len: bytes.len(), need: hs })?);
    if header.magic != MAGIC {
        return Err(ProfileError::BadMagic);
    }
    let (cs, ts) = (size_of::<CoreRecord>(), size_of::<TraceRecord>());
    let need = (header.cores as usize)
        .checked_mul(cs)
        .and_then(|c| c.checked_add((header.events as usize).checked_mul(ts)?))
        .and_then(|n| n.checked_add(hs));
    let need = need.unwrap_or(usize::MAX);
    if bytes.len() < need {
        return Err(ProfileError::Truncated { len: bytes.len(), need });
    }
    let mut at = hs;
    let mut cores = Vec::with_capacity(header.cores as usize);
    for _ in 0..header.cores {
        let r: CoreRecord = bytemuck::pod_read_unaligned(&bytes[at..at + cs]);
        cores.push(CoreStats {
            core: r.core,
            busy: r.busy,
            stall_cycles: r.stall_cycles,
            classes: r.classes,
            instructions: r.instructions,
        });
        at += cs;
    }
    let mut trace = Vec::with_capacity(header.events as usize);
    for i in 0..header.events as usize {
        let r: TraceRecord = bytemuck::pod_read_unaligned(&bytes[at..at + ts]);
        let class = OpClass::ALL.get(r.class as usize).copied().ok_or(ProfileError::BadRecord(i))?;
        let engine = engine(r.engine).ok_or(ProfileError::BadRecord(i))?;
        trace.push(TraceEvent {
            core: r.core,
            engine,
            class,
            index: r.index,
            start_cycle: r.start_cycle,
            end_cycle: r.end_cycle,
        });
        at += ts;
    }
    Ok((
        header.seq,
        RunProfile {
            start_cycle: header.start_cycle,
            end_cycle: header.end_cycle,
            cores,
            ddr_bytes: header.ddr_bytes,
            trace,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_profile_roundtrips_and_truncation_is_named() {
        let mut core =
            CoreStats { core: 3, busy: [1, 2, 3, 4], stall_cycles: 5, instructions: 6, ..Default::default() };
        core.classes[OpClass::Softmax as usize] =
            ClassStats { cycles: 7, count: 8, out_bytes: 9, cycles_per_kib_sum: 10, cycles_per_kib_sq_sum: 11 };
        let stats = RunProfile {
            start_cycle: 100,
            end_cycle: 900,
            cores: vec![core.clone(), CoreStats::default()],
            ddr_bytes: 4096,
            trace: vec![TraceEvent {
                core: 1,
                engine: Engine::Hvx,
                class: OpClass::Softmax,
                index: 2,
                start_cycle: 150,
                end_cycle: 300,
            }],
        };
        let bytes = encode(42, &stats);
        assert_eq!(bytes.len(), encoded_len(&stats));
        assert_eq!(decode(&bytes), Ok((42, stats)));
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(ProfileError::Truncated { .. })));
        assert_eq!(decode(&[0u8; 48]), Err(ProfileError::BadMagic));
    }
}
