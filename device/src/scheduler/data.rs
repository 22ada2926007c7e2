//! The functional side of instructions: the bytes DMA moves between DDR (or the pool)
//! and VTCM, and the compute kernels. Only functional runs call into here; a timing run
//! takes the same device time without touching memory.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::nsp::kernels::element_offsets;
use crate::nsp::{self, NspCore};
use crate::parallel;
use aicsim_abi::isa::{Op, Tensor};
use aicsim_abi::memory::SharedMemory;

/// Carries out `op`'s effect on memory for core `core` of a job whose cores are `cores`
/// (physical ids, in program order) and whose DDR starts at region offset `ddr_base`.
/// `None` if the instruction faults.
pub(super) fn execute<M: SharedMemory>(
    op: &Op,
    core: usize,
    cores: &[u32],
    ddr_base: u64,
    nsps: &mut [Option<NspCore>],
    vtcm_bytes: u64,
    mem: &M,
) -> Option<()> {
    let phys = *cores.get(core)?;
    match *op {
        Op::DmaIn { dst, src, multicast, .. } => {
            // Only a multicast needs a list of receiving cores.
            let single = [phys];
            let multi: Vec<u32>;
            let targets: &[u32] = if multicast == 0 {
                &single
            } else {
                multi = core::iter::once(phys)
                    .chain(
                        (0..64).filter(|b| multicast >> b & 1 == 1 && *b != core).filter_map(|b| cores.get(b).copied()),
                    )
                    .collect();
                &multi
            };
            dma_in(mem, ddr_base, &src, &dst, targets, nsps, vtcm_bytes)
        }
        Op::DmaOut { dst, src } => {
            let nsp = nsps.get_mut(phys as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes));
            dma_out(mem, ddr_base, &src, &dst, nsp.vtcm())
        }
        Op::Gather { dst, table, indices } => {
            let nsp = nsps.get_mut(phys as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes));
            gather(mem, ddr_base, &table, &indices, &dst, nsp.vtcm_mut())
        }
        Op::Scatter { dst, src, indices } => {
            let nsp = nsps.get_mut(phys as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes));
            scatter(mem, ddr_base, &src, &indices, &dst, nsp.vtcm())
        }
        Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => Some(()),
        _ => {
            let nsp = nsps.get_mut(phys as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes));
            nsp::kernels::compute(nsp.vtcm_mut(), op)
        }
    }
}

fn vtcm_range(t: &Tensor) -> Option<core::ops::Range<usize>> {
    let start = usize::try_from(t.offset).ok()?;
    Some(start..start.checked_add(usize::try_from(t.packed_bytes()).ok()?)?)
}

/// The tensor's bytes in logical order as runs of contiguous trailing dimensions (a
/// whole tile row, plane or tensor at once): the byte offset of every run, and the
/// length they all have.
fn runs(t: &Tensor) -> Option<(Vec<u64>, usize)> {
    if t.elements() == 0 {
        return Some((Vec::new(), 0));
    }
    let rank = t.rank as usize;
    let mut outer = *t;
    let mut run = 1u64;
    for d in (0..rank).rev() {
        if t.shape[d] != 1 && u64::from(t.strides[d]) != run {
            break;
        }
        run *= u64::from(t.shape[d]);
        outer.shape[d] = 1;
    }
    let len = usize::try_from(run * t.dtype.bytes()).ok()?;
    Some((element_offsets(&outer).collect(), len))
}

/// Transfers at least this long are spread over the helper thread when the memory
/// allows it ([`SharedMemory::concurrent`]), in pieces of [`COPY_PIECE`] bytes.
const PARALLEL_COPY: usize = 64 << 10;
const COPY_PIECE: usize = 16 << 10;

/// Calls `f(byte offset, part)` for the parts of the packed byte range `range` of a
/// tensor whose runs start at `offsets` and are `len` bytes long: where each part lies
/// in the tensor, and where in the packed bytes.
fn segments(
    offsets: &[u64],
    len: usize,
    range: core::ops::Range<usize>,
    mut f: impl FnMut(u64, core::ops::Range<usize>) -> Option<()>,
) -> Option<()> {
    let mut at = range.start;
    while at < range.end {
        let (run, within) = (at / len, at % len);
        let n = (len - within).min(range.end - at);
        f(offsets.get(run)? + within as u64, at..at + n)?;
        at += n;
    }
    Some(())
}

/// Runs `pieces`, which hands every piece's outcome to `report` (from either thread):
/// `Some` if none failed.
fn unless_a_piece_fails(pieces: impl FnOnce(&(dyn Fn(Option<()>) + Sync))) -> Option<()> {
    let failed = AtomicBool::new(false);
    pieces(&|outcome| {
        if outcome.is_none() {
            failed.store(true, Ordering::Relaxed);
        }
    });
    (!failed.into_inner()).then_some(())
}

/// The DDR tensor `src` (at `ddr_base`) -> its packed bytes `into`.
fn read_ddr<M: SharedMemory>(mem: &M, ddr_base: u64, src: &Tensor, into: &mut [u8]) -> Option<()> {
    let (offsets, len) = runs(src)?;
    if into.len() != offsets.len() * len {
        return None;
    }
    match mem.concurrent() {
        Some(m) if into.len() >= PARALLEL_COPY => unless_a_piece_fails(|report| {
            parallel::for_each_chunk_mut(into, COPY_PIECE, &|i, part| {
                let start = i * COPY_PIECE;
                report(segments(&offsets, len, start..start + part.len(), |at, r| {
                    m.read(ddr_base + at, part.get_mut(r.start - start..r.end - start)?).ok()
                }))
            })
        }),
        _ => segments(&offsets, len, 0..into.len(), |at, r| mem.read(ddr_base + at, into.get_mut(r)?).ok()),
    }
}

/// Packed bytes `from` -> the DDR tensor `dst` (at `ddr_base`).
fn write_ddr<M: SharedMemory>(mem: &M, ddr_base: u64, dst: &Tensor, from: &[u8]) -> Option<()> {
    let (offsets, len) = runs(dst)?;
    if from.len() != offsets.len() * len {
        return None;
    }
    match mem.concurrent() {
        Some(m) if from.len() >= PARALLEL_COPY => unless_a_piece_fails(|report| {
            parallel::for_each(from.len().div_ceil(COPY_PIECE), &|i| {
                let piece = i * COPY_PIECE..((i + 1) * COPY_PIECE).min(from.len());
                report(segments(&offsets, len, piece, |at, r| m.write(ddr_base + at, from.get(r)?).ok()))
            })
        }),
        _ => segments(&offsets, len, 0..from.len(), |at, r| mem.write(ddr_base + at, from.get(r)?).ok()),
    }
}

/// DDR -> VTCM of every target core; DDR is read once.
fn dma_in<M: SharedMemory>(
    mem: &M,
    ddr_base: u64,
    src: &Tensor,
    dst: &Tensor,
    targets: &[u32],
    nsps: &mut [Option<NspCore>],
    vtcm_bytes: u64,
) -> Option<()> {
    if let [core] = targets {
        if dst.is_contiguous() {
            // Straight into VTCM.
            let vtcm = nsps.get_mut(*core as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes)).vtcm_mut();
            return read_ddr(mem, ddr_base, src, vtcm.get_mut(vtcm_range(dst)?)?);
        }
    }
    let mut packed = vec![0u8; usize::try_from(src.packed_bytes()).ok()?];
    read_ddr(mem, ddr_base, src, &mut packed)?;
    let (offsets, len) = runs(dst)?;
    for &core in targets {
        let vtcm = nsps.get_mut(core as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes)).vtcm_mut();
        segments(&offsets, len, 0..packed.len(), |at, r| {
            let at = usize::try_from(at).ok()?;
            vtcm.get_mut(at..at.checked_add(r.len())?)?.copy_from_slice(packed.get(r)?);
            Some(())
        })?;
    }
    Some(())
}

/// VTCM -> DDR.
/// `dst[i] = table[indices[i]]`, row by row; `None` (a fault) for an index outside the
/// table, before anything is read for it.
fn gather<M: SharedMemory>(
    mem: &M,
    ddr_base: u64,
    table: &Tensor,
    indices: &Tensor,
    dst: &Tensor,
    vtcm: &mut [u8],
) -> Option<()> {
    let ids = nsp::kernels::gather_i32(vtcm, indices)?;
    let row_bytes = usize::try_from(u64::from(table.shape[1]) * table.dtype.bytes()).ok()?;
    let start = usize::try_from(dst.offset).ok()?;
    let mut row = *table;
    row.shape[0] = 1;
    for (i, &id) in ids.iter().enumerate() {
        let id = u32::try_from(id).ok().filter(|&id| id < table.shape[0])?;
        row.offset = table.offset + u64::from(id) * u64::from(table.strides[0]) * table.dtype.bytes();
        let at = start.checked_add(i.checked_mul(row_bytes)?)?;
        read_ddr(mem, ddr_base, &row, vtcm.get_mut(at..at.checked_add(row_bytes)?)?)?;
    }
    Some(())
}

/// `dst[g, indices[s], :] = src[g, s, :]`; an index outside the destination's rows
/// fails before anything is written.
fn scatter<M: SharedMemory>(
    mem: &M,
    ddr_base: u64,
    src: &Tensor,
    indices: &Tensor,
    dst: &Tensor,
    vtcm: &[u8],
) -> Option<()> {
    let ids = nsp::kernels::gather_i32(vtcm, indices)?;
    let rows: Vec<u32> =
        ids.iter().map(|&id| u32::try_from(id).ok().filter(|&id| id < dst.shape[1])).collect::<Option<_>>()?;
    let row_bytes = usize::try_from(u64::from(dst.shape[2]) * dst.dtype.bytes()).ok()?;
    let start = usize::try_from(src.offset).ok()?;
    let mut row = *dst;
    row.shape[0] = 1;
    row.shape[1] = 1;
    for g in 0..u64::from(src.shape[0]) {
        for (s, &id) in rows.iter().enumerate() {
            let elem = g * u64::from(dst.strides[0]) + u64::from(id) * u64::from(dst.strides[1]);
            row.offset = dst.offset + elem * dst.dtype.bytes();
            let at = start.checked_add((usize::try_from(g).ok()? * rows.len() + s).checked_mul(row_bytes)?)?;
            write_ddr(mem, ddr_base, &row, vtcm.get(at..at.checked_add(row_bytes)?)?)?;
        }
    }
    Some(())
}

fn dma_out<M: SharedMemory>(mem: &M, ddr_base: u64, src: &Tensor, dst: &Tensor, vtcm: &[u8]) -> Option<()> {
    if src.is_contiguous() {
        // Straight from VTCM.
        return write_ddr(mem, ddr_base, dst, vtcm.get(vtcm_range(src)?)?);
    }
    let (offsets, len) = runs(src)?;
    let mut packed = vec![0u8; usize::try_from(src.packed_bytes()).ok()?];
    segments(&offsets, len, 0..packed.len(), |at, r| {
        let at = usize::try_from(at).ok()?;
        packed.get_mut(r.clone())?.copy_from_slice(vtcm.get(at..at.checked_add(r.len())?)?);
        Some(())
    })?;
    write_ddr(mem, ddr_base, dst, &packed)
}
