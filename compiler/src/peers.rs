//! Which bytes of a pool read other cores hold.
//!
//! A layer output kept in the on-chip pool lives in the VTCM of the cores that wrote it:
//! each tile's `DmaOut` leaves its bytes with its core. A later `DmaIn` of those bytes is
//! a copy within the reader's VTCM when the reader wrote them and crosses the on-chip
//! network when another core did. This pass walks the lowered streams layer by layer
//! (barrier to barrier, the order the device runs them in), records who wrote what, and
//! sets every pool read's `peer_bytes`, exactly, from the geometry of the tiles.

use std::collections::HashMap;

use aicsim_abi::isa::{Op, Space, Tensor};

use crate::lower::contiguous;

/// A value stored in the activation region: its byte offset, its dims (the first one
/// counting every replica) and their element strides.
pub(crate) struct Stored {
    base: u64,
    dims: Vec<u64>,
    strides: Vec<u64>,
    /// Bytes per element.
    eb: u64,
}

impl Stored {
    pub(crate) fn new(base: u64, dims: Vec<u64>, eb: u64) -> Stored {
        let strides = contiguous(&dims);
        Stored { base, dims, strides, eb }
    }

    fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements of one sample (everything after the first dim).
    fn per_sample(&self) -> u64 {
        self.dims[1..].iter().product::<u64>().max(1)
    }
}

/// Elements of one value, by element index.
#[derive(Clone, Debug, PartialEq)]
enum Region {
    /// `lo[k]..hi[k]` along every dim of the value.
    Box { lo: Vec<u64>, hi: Vec<u64> },
    /// A contiguous run of flat element indices.
    Flat { lo: u64, hi: u64 },
}

impl Region {
    /// The sample (first-dim) range, for indexing writes.
    fn samples(&self, v: &Stored) -> std::ops::Range<u64> {
        let inner = v.per_sample();
        match self {
            Region::Box { lo, hi } => lo[0]..hi[0],
            Region::Flat { lo, hi } => lo / inner..hi.div_ceil(inner),
        }
    }

    /// The part of the region in sample `s`.
    fn in_sample(&self, s: u64, v: &Stored) -> Region {
        let inner = v.per_sample();
        match self {
            Region::Box { lo, hi } => {
                let (mut lo, mut hi) = (lo.clone(), hi.clone());
                (lo[0], hi[0]) = (s, s + 1);
                Region::Box { lo, hi }
            }
            Region::Flat { lo, hi } => Region::Flat { lo: (*lo).max(s * inner), hi: (*hi).min((s + 1) * inner) },
        }
    }
}

/// The elements of `v` that `t` covers, if `t` is a box of `v`'s dims or a contiguous
/// run; `None` for any other view (its bytes are then counted as the reader's own).
fn region(t: &Tensor, v: &Stored) -> Option<Region> {
    let rel = (t.offset - v.base) / v.eb;
    let strides = &v.strides;
    let view = t.dims();
    let (mut lo, mut hi) = (Vec::with_capacity(v.dims.len()), Vec::with_capacity(v.dims.len()));
    let mut rest = rel;
    for &s in strides {
        lo.push(rest / s);
        rest %= s;
    }
    hi.extend(lo.iter().map(|&c| c + 1));
    let mut used = vec![false; v.dims.len()];
    let mut is_box = true;
    for (k, &e) in view.iter().enumerate() {
        let e = u64::from(e);
        if e <= 1 {
            continue;
        }
        let stride = u64::from(t.strides[k]);
        match (0..v.dims.len()).find(|&j| !used[j] && strides[j] == stride && v.dims[j] > 1) {
            Some(j) if lo[j] + e <= v.dims[j] => {
                used[j] = true;
                hi[j] = lo[j] + e;
            }
            _ => {
                is_box = false;
                break;
            }
        }
    }
    if is_box {
        return Some(Region::Box { lo, hi });
    }
    let elements: u64 = view.iter().map(|&e| u64::from(e)).product();
    (t.is_contiguous() && rel + elements <= v.elements()).then_some(Region::Flat { lo: rel, hi: rel + elements })
}

/// Elements of the box `lo..hi` (over a value with `strides`) whose flat index is below `x`.
fn box_below(lo: &[u64], hi: &[u64], strides: &[u64], x: u64) -> u64 {
    let Some((&l, &h)) = lo.first().zip(hi.first()) else { return 0 };
    if h <= l {
        return 0;
    }
    let (s, sub_lo, sub_hi, sub_strides) = (strides[0], &lo[1..], &hi[1..], &strides[1..]);
    let first: u64 = sub_lo.iter().zip(sub_strides).map(|(&c, &s)| c * s).sum();
    let last: u64 = sub_hi.iter().zip(sub_strides).map(|(&c, &s)| (c - 1) * s).sum();
    let per: u64 = sub_lo.iter().zip(sub_hi).map(|(&a, &b)| b - a).product();
    // Slices c whose last element is below x are whole; the next one may be partial;
    // the slices' ranges are disjoint and increasing.
    let whole = if x > last { ((x - last - 1) / s + 1).saturating_sub(l).min(h - l) } else { 0 };
    let mut count = whole * per;
    let c = l + whole;
    if c < h && c * s + first < x {
        count += box_below(sub_lo, sub_hi, sub_strides, x - c * s);
    }
    count
}

fn overlap(a: &Region, b: &Region, strides: &[u64]) -> u64 {
    let run_box = |lo: u64, hi: u64, blo: &[u64], bhi: &[u64]| {
        box_below(blo, bhi, strides, hi) - box_below(blo, bhi, strides, lo)
    };
    match (a, b) {
        (Region::Box { lo: al, hi: ah }, Region::Box { lo: bl, hi: bh }) => al
            .iter()
            .zip(ah)
            .zip(bl.iter().zip(bh))
            .map(|((&a0, &a1), (&b0, &b1))| a1.min(b1).saturating_sub(a0.max(b0)))
            .product(),
        (Region::Flat { lo, hi }, Region::Box { lo: bl, hi: bh })
        | (Region::Box { lo: bl, hi: bh }, Region::Flat { lo, hi }) => run_box(*lo, *hi, bl, bh),
        (Region::Flat { lo: a0, hi: a1 }, Region::Flat { lo: b0, hi: b1 }) => {
            (*a1).min(*b1).saturating_sub((*a0).max(*b0))
        }
    }
}

/// Sets `peer_bytes` on every pool read of a multi-core program. Returns the bytes that
/// cross cores, per layer (one entry per barrier-separated layer).
pub(crate) fn mark_peer_reads(streams: &mut [Vec<Op>], stored: &[Stored]) -> Vec<u64> {
    let mut per_layer = Vec::new();
    if streams.len() < 2 {
        return per_layer;
    }
    // Values are laid out in increasing offsets.
    let find = |offset: u64| {
        let i = stored.partition_point(|v| v.base <= offset).checked_sub(1)?;
        let v = &stored[i];
        (offset < v.base + v.elements() * v.eb).then_some(i)
    };
    // Writes by (value, sample): the part of the region in that sample and the core
    // that holds it, from the last layer that wrote there.
    let mut writes: HashMap<(usize, u64), Vec<(Region, usize)>> = HashMap::new();
    let mut pcs = vec![0usize; streams.len()];
    loop {
        let mut layer_writes = Vec::new();
        let mut crossed = 0;
        let mut any = false;
        for (core, stream) in streams.iter_mut().enumerate() {
            while let Some(op) = stream.get_mut(pcs[core]) {
                pcs[core] += 1;
                any = true;
                match op {
                    Op::Barrier => break,
                    Op::DmaIn { src, peer_bytes, .. } if src.space == Space::Pool => {
                        let Some(v) = find(src.offset) else { continue };
                        let Some(read) = region(src, &stored[v]) else { continue };
                        let mut peer = 0;
                        for s in read.samples(&stored[v]) {
                            let part = read.in_sample(s, &stored[v]);
                            for (w, by) in writes.get(&(v, s)).into_iter().flatten() {
                                if *by != core {
                                    peer += overlap(&part, w, &stored[v].strides);
                                }
                            }
                        }
                        let bytes = (peer * stored[v].eb).min(src.packed_bytes());
                        *peer_bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                        crossed += bytes;
                    }
                    Op::DmaOut { dst, .. } if dst.space == Space::Pool => {
                        if let Some(v) = find(dst.offset) {
                            if let Some(r) = region(dst, &stored[v]) {
                                layer_writes.push((v, r, core));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if !any {
            break;
        }
        per_layer.push(crossed);
        // What this layer rewrites replaces what earlier layers left there.
        let mut fresh = std::collections::HashSet::new();
        for (v, r, core) in layer_writes {
            for s in r.samples(&stored[v]) {
                let list = writes.entry((v, s)).or_default();
                if fresh.insert((v, s)) {
                    list.clear();
                }
                list.push((r.in_sample(s, &stored[v]), core));
            }
        }
    }
    per_layer
}

#[cfg(test)]
mod tests {
    use super::*;
    use aicsim_abi::isa::DType;

    /// Flat indices of the box, by brute force.
    fn flat(lo: &[u64], hi: &[u64], strides: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64];
        for k in 0..lo.len() {
            out = out.iter().flat_map(|&b| (lo[k]..hi[k]).map(move |c| b + c * strides[k])).collect();
        }
        out
    }

    #[test]
    fn box_below_counts_what_enumerating_the_box_counts() {
        let dims = [3u64, 5, 4, 6];
        let strides = contiguous(&dims);
        let total: u64 = dims.iter().product();
        let boxes = [
            ([0u64, 0, 0, 0], [3u64, 5, 4, 6]),
            ([1, 2, 1, 0], [2, 5, 3, 6]),
            ([0, 1, 0, 2], [3, 4, 4, 5]),
            ([2, 4, 3, 5], [3, 5, 4, 6]),
            ([1, 0, 2, 1], [3, 3, 4, 4]),
        ];
        for (lo, hi) in boxes {
            let elements = flat(&lo, &hi, &strides);
            for x in 0..=total {
                let want = elements.iter().filter(|&&i| i < x).count() as u64;
                assert_eq!(box_below(&lo, &hi, &strides, x), want, "box {lo:?}..{hi:?} below {x}");
            }
        }
    }

    const EB: u64 = 2;

    /// Value 0: [1, 8, 4, 4] f16 at 4096; value 1: [1, 8, 4, 4] at 8192.
    fn stored() -> Vec<Stored> {
        vec![Stored::new(4096, vec![1, 8, 4, 4], EB), Stored::new(8192, vec![1, 8, 4, 4], EB)]
    }

    /// Channels `c0..c0 + n`, rows `r0..r0 + rows` of a stored value.
    fn view(base: u64, c0: u64, n: u32, r0: u64, rows: u32) -> Tensor {
        Tensor::contiguous(Space::Pool, base + (c0 * 16 + r0 * 4) * EB, DType::F16, &[n, rows, 4])
            .with_strides(&[16, 4, 1])
    }

    fn read(src: Tensor) -> Op {
        Op::DmaIn { dst: Tensor::vtcm(0, DType::F16, src.dims()), src, multicast: 0, peer_bytes: 0 }
    }

    fn write(dst: Tensor) -> Op {
        Op::DmaOut { src: Tensor::vtcm(0, DType::F16, dst.dims()), dst }
    }

    fn peer_of(op: &Op) -> u32 {
        match op {
            Op::DmaIn { peer_bytes, .. } => *peer_bytes,
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn a_read_of_channels_other_cores_wrote_crosses_for_exactly_those_bytes() {
        // Layer 1: core 0 writes channels 0..4, core 1 channels 4..8 of value 0.
        // Layer 2: each reads rows 1..3 of every channel; core 1 also reads value 0 flat
        // (its first 40 elements: channels 0..2 and 8 elements of channel 2).
        let flat_read = Tensor::contiguous(Space::Pool, 4096, DType::F16, &[40]);
        let mut streams = vec![
            vec![write(view(4096, 0, 4, 0, 4)), Op::Barrier, read(view(4096, 0, 8, 1, 2)), Op::Barrier],
            vec![
                write(view(4096, 4, 4, 0, 4)),
                Op::Barrier,
                read(view(4096, 0, 8, 1, 2)),
                read(flat_read),
                Op::Barrier,
            ],
        ];
        let crossed = mark_peer_reads(&mut streams, &stored());
        // Half of each 8-channel read (4 channels x 2 rows x 4) came from the other core.
        assert_eq!(peer_of(&streams[0][2]), 4 * 2 * 4 * 2);
        assert_eq!(peer_of(&streams[1][2]), 4 * 2 * 4 * 2);
        // The flat read is all core 0's channels.
        assert_eq!(peer_of(&streams[1][3]), 40 * 2);
        assert_eq!(crossed, vec![0, 2 * 64 + 80]);
    }

    #[test]
    fn rows_split_between_cores_cross_only_at_the_halo_and_a_later_rewrite_takes_over() {
        // Core 0 writes rows 0..2, core 1 rows 2..4 of every channel of value 1; each then
        // reads its rows plus one halo row. Then core 1 rewrites all of value 1 and core 0
        // reads it again: now all of it is core 1's.
        let mut streams = vec![
            vec![
                write(view(8192, 0, 8, 0, 2)),
                Op::Barrier,
                read(view(8192, 0, 8, 0, 3)),
                Op::Barrier,
                Op::Barrier,
                read(view(8192, 0, 8, 0, 4)),
            ],
            vec![
                write(view(8192, 0, 8, 2, 2)),
                Op::Barrier,
                read(view(8192, 0, 8, 1, 3)),
                Op::Barrier,
                write(view(8192, 0, 8, 0, 4)),
                Op::Barrier,
            ],
        ];
        mark_peer_reads(&mut streams, &stored());
        let halo = 8 * 4 * 2;
        assert_eq!(peer_of(&streams[0][2]), halo);
        assert_eq!(peer_of(&streams[1][2]), halo);
        assert_eq!(peer_of(&streams[0][5]), 8 * 4 * 4 * 2);
    }

    #[test]
    fn one_core_or_a_ddr_read_crosses_nothing() {
        let mut one = vec![vec![write(view(4096, 0, 8, 0, 4)), read(view(4096, 0, 8, 0, 4))]];
        assert!(mark_peer_reads(&mut one, &stored()).is_empty());
        assert_eq!(peer_of(&one[0][1]), 0);
        let ddr = Tensor::contiguous(Space::Ddr, 4096, DType::F16, &[64]);
        let mut two = vec![vec![write(view(4096, 0, 8, 0, 4)), Op::Barrier], vec![Op::Barrier, read(ddr)]];
        mark_peer_reads(&mut two, &stored());
        assert_eq!(peer_of(&two[1][1]), 0);
    }
}
