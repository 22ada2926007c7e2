//! DMA's functional effect through the scheduler: strided and contiguous transfers
//! between DDR and VTCM move exactly the bytes they name, whether the memory is
//! single-threaded or one the device spreads large transfers over two threads on.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use aicsim_abi::isa::{DType, Op, Space, Tensor};
use aicsim_abi::memory::{HeapMemory, OutOfRange, SharedMemory};
use aicsim_device::nsp::{CostModel, NspCore};
use aicsim_device::scheduler::{ExecMode, Plan, Scheduler};

/// A memory several threads may read and write at once, byte by byte.
struct Concurrent(Vec<AtomicU8>);

impl Concurrent {
    fn check(&self, offset: u64, len: usize) -> Result<usize, OutOfRange> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.0.len() as u64 => Ok(offset as usize),
            _ => Err(OutOfRange { offset, len: len as u64, size: self.0.len() as u64 }),
        }
    }
}

impl SharedMemory for Concurrent {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let at = self.check(offset, buf.len())?;
        buf.iter_mut().zip(&self.0[at..]).for_each(|(b, m)| *b = m.load(Ordering::Relaxed));
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let at = self.check(offset, data.len())?;
        data.iter().zip(&self.0[at..]).for_each(|(b, m)| m.store(*b, Ordering::Relaxed));
        Ok(())
    }
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), OutOfRange> {
        let mut buf = vec![0; len as usize];
        self.read(src, &mut buf)?;
        self.write(dst, &buf)
    }
    fn load_u32(&self, _: u64, _: Ordering) -> u32 {
        unimplemented!("not a register file")
    }
    fn store_u32(&self, _: u64, _: u32, _: Ordering) {
        unimplemented!("not a register file")
    }
    fn fetch_add_u32(&self, _: u64, _: u32, _: Ordering) -> u32 {
        unimplemented!("not a register file")
    }
    fn fetch_or_u32(&self, _: u64, _: u32, _: Ordering) -> u32 {
        unimplemented!("not a register file")
    }
    fn swap_u32(&self, _: u64, _: u32, _: Ordering) -> u32 {
        unimplemented!("not a register file")
    }
    fn compare_exchange_u32(&self, _: u64, _: u32, _: u32, _: Ordering) -> Result<u32, u32> {
        unimplemented!("not a register file")
    }
    fn load_u64(&self, _: u64, _: Ordering) -> u64 {
        unimplemented!("not a register file")
    }
    fn store_u64(&self, _: u64, _: u64, _: Ordering) {
        unimplemented!("not a register file")
    }
    fn wake(&self, _: u64) {}
    fn concurrent(&self) -> Option<&(dyn SharedMemory + Sync)> {
        Some(self)
    }
}

const DDR: usize = 12 << 20;
/// Where the outputs go in DDR.
const OUT: u64 = 8 << 20;

fn ddr_pattern() -> Vec<u8> {
    (0..DDR).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// Copies in: a 2 MiB contiguous block, a [60, 30, 100] f32 window of a [64, 50, 128]
/// tensor (runs of 400 bytes), and a [40, 300] f16 window of a [64, 1000] one; copies out:
/// the window transposed into [30, 60, 100] (runs of 400 bytes) and the block whole.
fn program() -> Vec<Op> {
    let f32t = |space, at, shape: &[u32]| Tensor::contiguous(space, at, DType::F32, shape);
    let window = f32t(Space::Ddr, 4 * (2 * 50 * 128 + 5 * 128 + 3), &[60, 30, 100]).with_strides(&[50 * 128, 128, 1]);
    let narrow =
        Tensor::contiguous(Space::Ddr, (4 << 20) + 2 * (1000 + 7), DType::F16, &[40, 300]).with_strides(&[1000, 1]);
    let block = Tensor::contiguous(Space::Ddr, 1 << 20, DType::U8, &[2 << 20]);
    let transposed = f32t(Space::Ddr, OUT, &[60, 30, 100]).with_strides(&[100, 60 * 100, 1]);
    vec![
        Op::DmaIn { dst: Tensor::vtcm(0, DType::U8, &[2 << 20]), src: block, multicast: 0, peer_bytes: 0 },
        Op::DmaIn { dst: Tensor::vtcm(3 << 20, DType::F32, &[60, 30, 100]), src: window, multicast: 0, peer_bytes: 0 },
        Op::DmaIn { dst: Tensor::vtcm(6 << 20, DType::F16, &[40, 300]), src: narrow, multicast: 0, peer_bytes: 0 },
        Op::DmaOut { dst: transposed, src: Tensor::vtcm(3 << 20, DType::F32, &[60, 30, 100]) },
        Op::DmaOut {
            dst: Tensor::contiguous(Space::Ddr, OUT + (1 << 20), DType::F16, &[40, 300]),
            src: Tensor::vtcm(6 << 20, DType::F16, &[40, 300]),
        },
        Op::DmaOut {
            dst: Tensor::contiguous(Space::Ddr, OUT + (2 << 20), DType::U8, &[2 << 20]),
            src: Tensor::vtcm(0, DType::U8, &[2 << 20]),
        },
        Op::End,
    ]
}

fn run<M: SharedMemory>(mem: &M) {
    let mut sched = Scheduler::new(CostModel::default(), 1_400_000_000);
    let mut nsps: Vec<Option<NspCore>> = (0..1).map(|_| None).collect();
    sched.start(Arc::new(Plan::new(vec![program()], &CostModel::default())), &[0], 0);
    let done = sched.run_until_completion(&mut nsps, 8 << 20, mem, ExecMode::Functional);
    assert!(done.iter().all(|d| d.1.is_ok()), "the program faulted");
}

fn expected(ddr: &[u8]) -> Vec<u8> {
    let mut out = ddr.to_vec();
    let f32_at = |i: usize| &ddr[i * 4..i * 4 + 4];
    for c in 0..60 {
        for y in 0..30 {
            for x in 0..100 {
                let from = (2 + c) * 50 * 128 + (5 + y) * 128 + 3 + x;
                let to = OUT as usize / 4 + (y * 60 + c) * 100 + x;
                out[to * 4..to * 4 + 4].copy_from_slice(f32_at(from));
            }
        }
    }
    for r in 0..40 {
        let from = (4 << 20) + 2 * ((1 + r) * 1000 + 7);
        let to = OUT as usize + (1 << 20) + r * 600;
        out[to..to + 600].copy_from_slice(&ddr[from..from + 600]);
    }
    let to = OUT as usize + (2 << 20);
    out[to..to + (2 << 20)].copy_from_slice(&ddr[1 << 20..3 << 20]);
    out
}

#[test]
fn transfers_move_exactly_the_bytes_they_name_on_one_thread_and_on_two() {
    let ddr = ddr_pattern();
    let want = expected(&ddr);

    let heap = HeapMemory::new(DDR);
    heap.write(0, &ddr).unwrap();
    run(&heap);
    let mut got = vec![0; DDR];
    heap.read(0, &mut got).unwrap();
    assert!(
        got == want,
        "single-threaded memory: first wrong byte at {:?}",
        got.iter().zip(&want).position(|(a, b)| a != b)
    );

    let shared = Concurrent(ddr.iter().map(|&b| AtomicU8::new(b)).collect());
    run(&shared);
    shared.read(0, &mut got).unwrap();
    assert!(
        got == want,
        "concurrent memory: first wrong byte at {:?}",
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
}
