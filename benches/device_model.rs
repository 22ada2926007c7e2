//! The device model's own speed, in one run:
//! - timing-mode simulation speed: instructions the scheduler issues per host second on
//!   16 busy cores, beside a baseline that only decodes the same instruction records
//!   (the least any simulator of this ISA must do per instruction);
//! - functional f32 matmul 512 x 512 x 512 through the HMX kernel (gather, sgemm,
//!   scatter on VTCM), beside `matrixmultiply::sgemm` on packed arrays.
//!
//! Targets (issue 3): >= 2,000,000 simulated instructions per host second on one core;
//! matmul >= 0.8x of sgemm. Run with `cargo bench --bench device_model`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::isa::{BinaryKind, DType, Instruction, Op, Tensor, UnaryKind};
use aicsim_abi::memory::HeapMemory;
use aicsim_device::nsp::kernels::compute;
use aicsim_device::nsp::{CostModel, NspCore};
use aicsim_device::scheduler::{ExecMode, Plan, Scheduler};

/// One core's stream: `tiles` x (DMA in, two vector ops, DMA out), double-buffered.
fn tile_loop(tiles: u32) -> Vec<Op> {
    let mut ops = Vec::new();
    for t in 0..tiles {
        let buf = u64::from(t % 2) * 4096;
        let v = |at: u64| Tensor::vtcm(buf + at, DType::F16, &[128]);
        ops.push(Op::DmaIn {
            dst: v(0),
            src: Tensor::ddr(u64::from(t % 64) * 256, DType::F16, &[128]),
            multicast: 0,
            peer_bytes: 0,
        });
        ops.push(Op::Binary { kind: BinaryKind::Mul, dst: v(256), a: v(0), b: v(0) });
        ops.push(Op::Unary { kind: UnaryKind::Relu, dst: v(512), src: v(256) });
        ops.push(Op::DmaOut { dst: Tensor::ddr(16384 + u64::from(t % 64) * 256, DType::F16, &[128]), src: v(512) });
    }
    ops.push(Op::End);
    ops
}

fn simulation_speed(cores: u32, tiles: u32) -> (f64, u64, f64) {
    let streams: Vec<Vec<Op>> = (0..cores).map(|_| tile_loop(tiles)).collect();
    let records: Vec<Instruction> = streams.iter().flatten().map(|&o| Instruction::encode(o)).collect();
    let mem = HeapMemory::new(64 << 10);
    let mut nsps: Vec<Option<NspCore>> = (0..16).map(|_| None).collect();
    let mut sched = Scheduler::new(CostModel::default(), 1_400_000_000);
    let core_ids: Vec<u32> = (0..cores).collect();
    let streams = Arc::new(Plan::new(streams, &CostModel::default()));
    // Warm up (allocates VTCM), then measure.
    sched.start(streams.clone(), &core_ids, 0);
    sched.run_until_completion(&mut nsps, 64 << 10, &mem, ExecMode::Timing);
    let before = sched.instructions;
    let t = Instant::now();
    sched.start(streams, &core_ids, 0);
    let done = sched.run_until_completion(&mut nsps, 64 << 10, &mem, ExecMode::Timing);
    let elapsed = t.elapsed();
    let cycles = done[0].1.as_ref().expect("runs").cycles();
    let issued = sched.instructions - before;
    let t = Instant::now();
    let mut decoded = 0u64;
    while t.elapsed() < Duration::from_millis(200) {
        for r in &records {
            black_box(r.decode().is_ok());
            decoded += 1;
        }
    }
    let decode_rate = decoded as f64 / t.elapsed().as_secs_f64();
    (issued as f64 / elapsed.as_secs_f64(), cycles, decode_rate)
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn matmul(n: u32, runs: usize) -> (Duration, Duration) {
    let size = (n * n) as usize;
    let a: Vec<f32> = (0..size).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let b: Vec<f32> = (0..size).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let mut core = NspCore::new(3 * size as u64 * 4 + 4096);
    let bytes = size as u64 * 4;
    for (at, m) in [(0u64, &a), (bytes, &b)] {
        for (i, v) in m.iter().enumerate() {
            let o = at as usize + 4 * i;
            core.vtcm_mut()[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let op = Op::MatMul {
        dst: Tensor::vtcm(2 * bytes, DType::F32, &[n, n]),
        a: Tensor::vtcm(0, DType::F32, &[n, n]),
        b: Tensor::vtcm(bytes, DType::F32, &[n, n]),
        accumulate: false,
        zero_point: 0,
    };
    let ours = best_of(runs, || {
        let t = Instant::now();
        compute(core.vtcm_mut(), &op).unwrap();
        t.elapsed()
    });
    let mut c = vec![0f32; size];
    let n = n as usize;
    let baseline = best_of(runs, || {
        let t = Instant::now();
        aicsim_device::nsp::gemm::sgemm(n, n, n, black_box(&a), black_box(&b), 0.0, &mut c);
        t.elapsed()
    });
    // Same numbers from both paths.
    let ours_c: Vec<f32> = core.vtcm()[2 * bytes as usize..3 * bytes as usize]
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
        .collect();
    assert_eq!(ours_c, c);
    (ours, baseline)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (tiles, n, runs) = if full { (20_000, 512, 7) } else { (500, 128, 2) };
    let (rate, cycles, decode_rate) = simulation_speed(16, tiles);
    println!("timing-mode simulation speed, 16 cores x {tiles} tiles (DMA in, 2 HVX ops, DMA out):");
    println!("  aicsim scheduler:            {:>12.0} instructions / host second ({} device cycles)", rate, cycles);
    println!("  baseline: decode records only {:>11.0} instructions / host second", decode_rate);
    println!(
        "  scheduler / target 2,000,000 = {:.2}x; scheduler / decode-only = {:.3}",
        rate / 2e6,
        rate / decode_rate
    );
    let (ours, baseline) = matmul(n, runs);
    let flops = 2.0 * f64::from(n).powi(3);
    println!("functional f32 matmul {n}x{n}x{n} (best of {runs}):");
    println!(
        "  aicsim HMX kernel on VTCM:   {:>8.2} ms  {:>6.1} GFLOP/s",
        ours.as_secs_f64() * 1e3,
        flops / ours.as_secs_f64() / 1e9
    );
    println!(
        "  baseline matrixmultiply::sgemm {:>6.2} ms  {:>6.1} GFLOP/s",
        baseline.as_secs_f64() * 1e3,
        flops / baseline.as_secs_f64() / 1e9
    );
    println!("  aicsim / sgemm throughput = {:.2}x (target >= 0.8x)", baseline.as_secs_f64() / ours.as_secs_f64());
}
