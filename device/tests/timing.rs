//! Properties of device time, through the scheduler.

use std::sync::Arc;

use aicsim_abi::isa::{DType, Op, Space, Tensor};
use aicsim_abi::memory::{HeapMemory, SharedMemory};
use aicsim_device::nsp::{CostModel, NspCore};
use aicsim_device::scheduler::{ExecMode, Plan, RunProfile, Scheduler};
use proptest::prelude::*;

const CLOCK: u64 = 1_400_000_000;
const VTCM: u64 = 8 << 20;

/// A program run to start: per-core streams, the physical cores, the DDR base.
type JobSpec = (Vec<Vec<Op>>, Vec<u32>, u64);

struct Rig {
    sched: Scheduler,
    nsps: Vec<Option<NspCore>>,
    mem: HeapMemory,
}

impl Rig {
    fn new(ddr: usize) -> Rig {
        Rig::with_cost(CostModel::default(), ddr)
    }

    fn with_cost(cost: CostModel, ddr: usize) -> Rig {
        Rig { sched: Scheduler::new(cost, CLOCK), nsps: (0..16).map(|_| None).collect(), mem: HeapMemory::new(ddr) }
    }

    /// Runs jobs (each a list of per-core streams on the given cores) started together.
    fn run(&mut self, jobs: &[JobSpec], mode: ExecMode) -> Vec<RunProfile> {
        let ids: Vec<u64> = jobs
            .iter()
            .map(|(streams, cores, base)| {
                self.sched.start(Arc::new(Plan::new(streams.clone(), self.sched.cost())), cores, *base)
            })
            .collect();
        let mut out: Vec<Option<RunProfile>> = vec![None; ids.len()];
        while out.iter().any(Option::is_none) {
            for (id, result) in self.sched.run_until_completion(&mut self.nsps, VTCM, &self.mem, mode) {
                let i = ids.iter().position(|&x| x == id).unwrap();
                out[i] = Some(result.expect("program runs"));
            }
        }
        out.into_iter().map(Option::unwrap).collect()
    }
}

fn matmul(m: u32, n: u32, k: u32) -> Vec<Op> {
    vec![
        Op::MatMul {
            dst: Tensor::vtcm(0, DType::F16, &[m, n]),
            a: Tensor::vtcm(1 << 20, DType::F16, &[m, k]),
            b: Tensor::vtcm(2 << 20, DType::F16, &[k, n]),
            accumulate: false,
            zero_point: 0,
        },
        Op::End,
    ]
}

/// A core streaming `chunks` x `bytes` from DDR at `base` into VTCM.
fn streaming(chunks: u32, bytes: u32) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..chunks)
        .map(|i| Op::DmaIn {
            dst: Tensor::vtcm(u64::from(i % 2) * u64::from(bytes), DType::U8, &[bytes]),
            src: Tensor::ddr(u64::from(i) * u64::from(bytes), DType::U8, &[bytes]),
            multicast: 0,
            peer_bytes: 0,
        })
        .collect();
    ops.push(Op::End);
    ops
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn more_macs_never_take_fewer_cycles(m in 1u32..300, n in 1u32..300, k in 1u32..300, dm in 0u32..100, dn in 0u32..100, dk in 0u32..100) {
        let mut rig = Rig::new(4096);
        let small = rig.run(&[(vec![matmul(m, n, k)], vec![0], 0)], ExecMode::Timing)[0].cycles();
        let big = rig.run(&[(vec![matmul(m + dm, n + dn, k + dk)], vec![0], 0)], ExecMode::Timing)[0].cycles();
        prop_assert!(big >= small, "{}x{}x{} took {} cycles, larger {}x{}x{} took {}", m, n, k, small, m + dm, n + dn, k + dk, big);
    }
}

#[test]
fn two_activations_streaming_from_ddr_each_run_slower_and_share_the_bandwidth() {
    let (chunks, bytes) = (16u32, 1u32 << 20);
    let total = u64::from(chunks) * u64::from(bytes);
    let mut rig = Rig::new(2 * total as usize);
    let alone = rig.run(&[(vec![streaming(chunks, bytes)], vec![0], 0)], ExecMode::Timing)[0].cycles();
    let together = rig.run(
        &[(vec![streaming(chunks, bytes)], vec![0], 0), (vec![streaming(chunks, bytes)], vec![1], total)],
        ExecMode::Timing,
    );
    for run in &together {
        assert!(run.cycles() > alone, "alone {alone} cycles, together {}", run.cycles());
        assert_eq!(run.ddr_bytes, total);
    }
    let span =
        together.iter().map(|r| r.end_cycle).max().unwrap() - together.iter().map(|r| r.start_cycle).min().unwrap();
    let ddr_bytes_per_cycle = CostModel::default().ddr_bytes_per_cycle(CLOCK);
    let aggregate = 2.0 * total as f64 / span as f64;
    assert!(
        aggregate <= ddr_bytes_per_cycle * 1.0001,
        "aggregate {aggregate:.2} B/cycle exceeds DDR's {ddr_bytes_per_cycle:.2}"
    );
    // And it is DDR, not the cores, that limits them: within 5% of the DDR rate.
    assert!(aggregate >= ddr_bytes_per_cycle * 0.95, "aggregate {aggregate:.2} B/cycle, DDR {ddr_bytes_per_cycle:.2}");
}

/// A core copying `chunks` x `bytes` of the on-chip pool at `base` into VTCM, of which
/// `peer` bytes per chunk are held by other cores. Every chunk lands on the same VTCM
/// bytes, so one copy runs at a time.
fn pool_reads(base: u64, chunks: u32, bytes: u32, peer: u32) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..chunks)
        .map(|i| Op::DmaIn {
            dst: Tensor::vtcm(0, DType::U8, &[bytes]),
            src: Tensor::contiguous(Space::Pool, base + u64::from(i) * u64::from(bytes), DType::U8, &[bytes]),
            multicast: 0,
            peer_bytes: peer,
        })
        .collect();
    ops.push(Op::End);
    ops
}

#[test]
fn pool_reads_from_other_cores_share_the_network_and_local_copies_do_not() {
    // A network 1.5x one core's pool rate: one core alone is limited by its pool rate,
    // four at once by the network.
    let mut cost = CostModel::default();
    let pool = cost.pool_bytes_per_cycle as f64;
    cost.noc_bytes_per_second = (1.5 * pool * CLOCK as f64) as u64;
    let (chunks, bytes) = (32u32, 64u32 << 10);
    let total = u64::from(chunks) * u64::from(bytes);
    let mut rig = Rig::with_cost(cost, 4 * total as usize);
    let job = |core: u32, peer: u32| (vec![pool_reads(u64::from(core) * total, chunks, bytes, peer)], vec![core], 0);
    let local = rig.run(&[job(0, 0)], ExecMode::Timing)[0].cycles();
    let remote = rig.run(&[job(0, bytes)], ExecMode::Timing)[0].cycles();
    let half = rig.run(&[job(0, bytes / 2)], ExecMode::Timing)[0].cycles();
    // Alone, the pool rate is the limit wherever the bytes are, and no DDR is used.
    let at_pool_rate = total as f64 / pool + f64::from(chunks * cost.dma_setup_cycles as u32);
    for (what, cycles) in [("local", local), ("remote", remote), ("half remote", half)] {
        assert!(
            (cycles as f64) >= at_pool_rate && (cycles as f64) < at_pool_rate * 1.01,
            "{what}: {cycles} cycles alone, {at_pool_rate:.0} at the pool rate"
        );
    }
    let mut four = |peer: u32| {
        let runs = rig.run(&(0..4).map(|c| job(c, peer)).collect::<Vec<_>>(), ExecMode::Timing);
        assert!(runs.iter().all(|r| r.ddr_bytes == 0));
        runs.iter().map(|r| r.end_cycle).max().unwrap() - runs.iter().map(|r| r.start_cycle).min().unwrap()
    };
    // Four cores copying their own bytes each keep the pool rate.
    let span = four(0);
    assert!(span.abs_diff(local) * 100 <= local, "four local copies took {span} cycles, one {local}");
    // Four reading other cores' bytes share the network: 4 / 1.5 times as long, and
    // together they move no more than the network carries.
    let span = four(bytes);
    let noc = 1.5 * pool;
    let aggregate = 4.0 * total as f64 / span as f64;
    assert!(aggregate <= noc * 1.0001, "{aggregate:.1} B/cycle over a {noc:.1} B/cycle network");
    assert!(aggregate >= noc * 0.9, "{aggregate:.1} B/cycle; the network carries {noc:.1}");
    // With half of each read remote, the network carries half as much: faster than all remote.
    let half_span = four(bytes / 2);
    assert!(half_span < span, "half remote {half_span} cycles, all remote {span}");
}

#[test]
fn multicast_to_k_cores_reads_ddr_once_and_lands_everywhere() {
    let bytes = 256u32 << 10;
    let mut rig = Rig::new(bytes as usize);
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + 3) as u8).collect();
    rig.mem.write(0, &data).unwrap();
    let single = rig.run(&[(vec![streaming(1, bytes)], vec![0], 0)], ExecMode::Timing)[0].clone();
    for k in [2u32, 4, 8] {
        let mut streams = vec![vec![
            Op::DmaIn {
                dst: Tensor::vtcm(4096, DType::U8, &[bytes]),
                src: Tensor::ddr(0, DType::U8, &[bytes]),
                multicast: (1 << k) - 1,
                peer_bytes: 0,
            },
            Op::End,
        ]];
        streams.extend((1..k).map(|_| vec![Op::End]));
        let cores: Vec<u32> = (4..4 + k).collect();
        let run = rig.run(&[(streams, cores.clone(), 0)], ExecMode::Functional)[0].clone();
        assert_eq!(run.ddr_bytes, u64::from(bytes), "{k} cores: DDR read once");
        assert_eq!(run.cycles(), single.cycles(), "{k} cores: as fast as one");
        for &c in &cores {
            assert_eq!(
                &rig.nsps[c as usize].as_ref().unwrap().vtcm()[4096..4096 + bytes as usize],
                &data[..],
                "core {c} got the data"
            );
        }
    }
}

/// A small program that uses every engine: DMA in, matmul, softmax, DMA out.
fn mixed_program() -> Vec<Op> {
    vec![
        Op::DmaIn {
            dst: Tensor::vtcm(0, DType::F32, &[2, 64, 64]),
            src: Tensor::ddr(0, DType::F32, &[2, 64, 64]),
            multicast: 0,
            peer_bytes: 0,
        },
        Op::MatMul {
            dst: Tensor::vtcm(65536, DType::F32, &[64, 64]),
            a: Tensor::vtcm(0, DType::F32, &[64, 64]),
            b: Tensor::vtcm(16384, DType::F32, &[64, 64]),
            accumulate: false,
            zero_point: 0,
        },
        Op::Softmax {
            dst: Tensor::vtcm(81920, DType::F32, &[64, 64]),
            src: Tensor::vtcm(65536, DType::F32, &[64, 64]),
        },
        Op::DmaOut { dst: Tensor::ddr(32768, DType::F32, &[64, 64]), src: Tensor::vtcm(81920, DType::F32, &[64, 64]) },
        Op::End,
    ]
}

fn seeded_inputs(seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..2 * 64 * 64)
        .flat_map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5).to_le_bytes()
        })
        .collect()
}

fn run_once(mode: ExecMode, seed: u64) -> (u64, Vec<u8>) {
    let mut rig = Rig::new(64 << 10);
    rig.mem.write(0, &seeded_inputs(seed)).unwrap();
    let stats = rig.run(&[(vec![mixed_program()], vec![0], 0)], mode);
    let mut out = vec![0u8; 64 * 64 * 4];
    rig.mem.read(32768, &mut out).unwrap();
    (stats[0].cycles(), out)
}

#[test]
fn timing_and_functional_modes_give_the_same_device_time() {
    let (t_cycles, t_out) = run_once(ExecMode::Timing, 5);
    let (f_cycles, f_out) = run_once(ExecMode::Functional, 5);
    assert_eq!(t_cycles, f_cycles);
    assert!(t_out.iter().all(|&b| b == 0), "timing mode computes nothing");
    let probs: Vec<f32> = f_out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let row: f32 = probs[..64].iter().sum();
    assert!((row - 1.0).abs() < 1e-5, "functional mode computed a real softmax (row sums to {row})");
}

#[test]
fn the_same_program_inputs_and_seed_give_bit_identical_outputs_and_device_time() {
    let a = run_once(ExecMode::Functional, 42);
    let b = run_once(ExecMode::Functional, 42);
    assert_eq!(a, b);
    let c = run_once(ExecMode::Functional, 43);
    assert_ne!(a.1, c.1, "a different seed gives different outputs");
    assert_eq!(a.0, c.0, "device time does not depend on the data");
}

#[test]
fn dma_overlaps_compute_when_nothing_conflicts() {
    // Two independent halves: loading the second while computing on the first should
    // take less than doing them back to back.
    let load = |at: u64| Op::DmaIn {
        dst: Tensor::vtcm(at, DType::F16, &[256, 256]),
        src: Tensor::ddr(0, DType::F16, &[256, 256]),
        multicast: 0,
        peer_bytes: 0,
    };
    let mm = |at: u64| Op::MatMul {
        dst: Tensor::vtcm(at + (4 << 20), DType::F16, &[256, 256]),
        a: Tensor::vtcm(at, DType::F16, &[256, 256]),
        b: Tensor::vtcm(at, DType::F16, &[256, 256]),
        accumulate: false,
        zero_point: 0,
    };
    let mut rig = Rig::new(256 * 256 * 2);
    let pipelined = rig
        .run(&[(vec![vec![load(0), load(1 << 20), mm(0), mm(1 << 20), Op::End]], vec![0], 0)], ExecMode::Timing)[0]
        .cycles();
    let one_load = rig.run(&[(vec![vec![load(0), Op::End]], vec![0], 0)], ExecMode::Timing)[0].cycles();
    let one_mm = rig.run(&[(vec![vec![mm(0), Op::End]], vec![0], 0)], ExecMode::Timing)[0].cycles();
    assert!(pipelined < 2 * (one_load + one_mm), "pipelined {pipelined}, serial {}", 2 * (one_load + one_mm));
}

#[test]
fn a_traced_run_records_every_instruction_inside_the_run_and_in_engine_order() {
    let mut rig = Rig::new(64 << 10);
    rig.sched.set_tracing(true);
    let run = rig.run(&[(vec![mixed_program(), mixed_program()], vec![2, 3], 0)], ExecMode::Timing).remove(0);
    assert_eq!(run.trace.len(), 2 * 4, "every instruction but End");
    for e in &run.trace {
        assert!(
            run.start_cycle <= e.start_cycle && e.start_cycle < e.end_cycle && e.end_cycle <= run.end_cycle,
            "{e:?}"
        );
    }
    // One DMA engine per core: its intervals never overlap.
    for core in 0..2 {
        let mut dma: Vec<_> =
            run.trace.iter().filter(|e| e.core == core && e.engine == aicsim_device::nsp::Engine::Dma).collect();
        dma.sort_by_key(|e| e.start_cycle);
        assert!(dma.windows(2).all(|w| w[0].end_cycle <= w[1].start_cycle));
    }
    let busy: u64 = run.cores.iter().map(|c| c.busy.iter().sum::<u64>()).sum();
    assert_eq!(busy, run.trace.iter().map(|e| e.end_cycle - e.start_cycle).sum::<u64>());
}

#[test]
fn strided_3d_dma_gathers_and_scatters_exactly() {
    // DDR holds a [4, 6, 8] u16-sized (f16) block; take the [2, 3, 4] sub-block starting
    // at (1, 2, 3) into packed VTCM, then write it back transposed ([4, 3, 2]) to DDR.
    let (d0, d1, d2) = (4u32, 6u32, 8u32);
    let mut rig = Rig::new(64 << 10);
    let block: Vec<u8> = (0..d0 * d1 * d2).flat_map(|i| (i as u16).to_le_bytes()).collect();
    rig.mem.write(0, &block).unwrap();
    let origin = u64::from((d1 * d2) + 2 * d2 + 3) * 2;
    let src = Tensor::ddr(origin, DType::F16, &[2, 3, 4]).with_strides(&[d1 * d2, d2, 1]);
    let out = Tensor::ddr(8192, DType::F16, &[4, 3, 2]);
    let transposed_vtcm = Tensor::vtcm(0, DType::F16, &[4, 3, 2]).with_strides(&[1, 4, 12]);
    let program = vec![
        Op::DmaIn { dst: Tensor::vtcm(0, DType::F16, &[2, 3, 4]), src, multicast: 0, peer_bytes: 0 },
        Op::DmaOut { dst: out, src: transposed_vtcm },
        Op::End,
    ];
    rig.run(&[(vec![program], vec![0], 0)], ExecMode::Functional);
    let mut got = vec![0u8; 24 * 2];
    rig.mem.read(8192, &mut got).unwrap();
    let got: Vec<u16> = got.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut want = vec![];
    for k in 0..4u32 {
        for j in 0..3u32 {
            for i in 0..2u32 {
                want.push(((1 + i) * d1 * d2 + (2 + j) * d2 + (3 + k)) as u16);
            }
        }
    }
    assert_eq!(got, want);
}

#[test]
fn signal_and_wait_order_one_cores_results_before_anothers_reads() {
    // Core 0 computes x + x into DDR and signals; core 1 waits, reads it, adds again.
    let v = |at: u64| Tensor::vtcm(at, DType::F32, &[16]);
    let core0 = vec![
        Op::DmaIn { dst: v(0), src: Tensor::ddr(0, DType::F32, &[16]), multicast: 0, peer_bytes: 0 },
        Op::Binary { kind: aicsim_abi::isa::BinaryKind::Add, dst: v(64), a: v(0), b: v(0) },
        Op::DmaOut { dst: Tensor::ddr(64, DType::F32, &[16]), src: v(64) },
        Op::Signal { counter: 3, value: 1 },
        Op::End,
    ];
    let core1 = vec![
        Op::Wait { counter: 3, value: 1 },
        Op::DmaIn { dst: v(0), src: Tensor::ddr(64, DType::F32, &[16]), multicast: 0, peer_bytes: 0 },
        Op::Binary { kind: aicsim_abi::isa::BinaryKind::Add, dst: v(64), a: v(0), b: v(0) },
        Op::DmaOut { dst: Tensor::ddr(128, DType::F32, &[16]), src: v(64) },
        Op::End,
    ];
    let mut rig = Rig::new(4096);
    let x: Vec<u8> = (0..16).flat_map(|i| (i as f32 + 0.5).to_le_bytes()).collect();
    rig.mem.write(0, &x).unwrap();
    rig.sched.set_tracing(true);
    let run = rig.run(&[(vec![core0, core1], vec![0, 1], 0)], ExecMode::Functional).remove(0);
    let mut out = vec![0u8; 64];
    rig.mem.read(128, &mut out).unwrap();
    let out: Vec<f32> = out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(out, (0..16).map(|i| 4.0 * (i as f32 + 0.5)).collect::<Vec<_>>());
    let end_of = |core, index| run.trace.iter().find(|e| e.core == core && e.index == index).unwrap().end_cycle;
    let start_of = |core, index| run.trace.iter().find(|e| e.core == core && e.index == index).unwrap().start_cycle;
    assert!(start_of(1, 1) >= end_of(0, 3), "core 1 reads only after core 0's signal took effect");
    assert!(run.cores[1].stall_cycles > 0, "core 1 stalled waiting");
}

#[test]
fn cores_waiting_on_each_other_forever_are_reported_as_a_deadlock() {
    let mut rig = Rig::new(4096);
    let id = rig.sched.start(
        Arc::new(Plan::new(
            vec![vec![Op::Wait { counter: 0, value: 1 }, Op::End], vec![Op::Barrier, Op::End]],
            &CostModel::default(),
        )),
        &[0, 1],
        0,
    );
    let done = rig.sched.run_until_completion(&mut rig.nsps, VTCM, &rig.mem, ExecMode::Timing);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, id);
    assert_eq!(done[0].1, Err(aicsim_device::scheduler::ExecFault::Deadlock));
    assert!(rig.sched.is_idle());
}
