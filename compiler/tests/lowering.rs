//! How the lowering spreads a network over cores: every core gets the same number of
//! tiles, a core's first weight block of a layer streams in while the previous layer
//! computes, and every pool read says how many of its bytes other cores hold.

use aicsim_abi::isa::{Op, Space};
use aicsim_compiler::lower::Lowered;
use aicsim_compiler::{compile, zoo, CompileOptions};

fn resnet50(cores: u32, batch: u32) -> Lowered {
    let opts = CompileOptions {
        cores,
        batch_size: Some(batch),
        fp16: true,
        multicast_weights: true,
        ..CompileOptions::default()
    };
    compile(&zoo::resnet50(), None, "resnet50", &opts).expect("resnet50 compiles").lowered
}

/// Each core's stream cut at its barriers: one slice per layer.
fn layers(stream: &[Op]) -> Vec<&[Op]> {
    stream.split(|op| matches!(op, Op::Barrier)).collect()
}

#[test]
fn every_core_gets_the_same_number_of_convolution_tiles_where_the_rows_allow() {
    // 7 cores, batch 1: a 56-row layer was cut into 8 row tiles (one core did two).
    let l = resnet50(7, 1);
    let per_core: Vec<Vec<&[Op]>> = l.streams.iter().map(|s| layers(s)).collect();
    let mut balanced = 0;
    let mut convs = 0;
    for (i, report) in l.layers.iter().enumerate().filter(|(_, r)| r.op_type == "Conv") {
        let counts: Vec<usize> = per_core
            .iter()
            .map(|layers| layers[i].iter().filter(|op| matches!(op, Op::Conv2d { .. })).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), report.tiles, "layer {} ({})", i, report.name);
        convs += 1;
        let even = counts.iter().all(|&c| c == counts[0]);
        // Every layer of the first three stages is even; only some 7x7 layers of the last
        // stage (16 blocks of 32 channels over 7 cores) cannot be.
        assert!(even || i >= 44, "layer {} ({}): {counts:?}", i, report.name);
        if even {
            balanced += 1;
        } else {
            // Where the count cannot be split evenly, no core has more than one extra.
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1 || *lo > 0 && hi * 4 <= lo * 5, "layer {} ({}): {counts:?}", i, report.name);
        }
    }
    assert!(balanced * 10 >= convs * 8, "{balanced} of {convs} convolutions even across cores");
}

#[test]
fn a_layers_first_weight_block_is_on_its_way_before_the_previous_layer_ends() {
    // Batch 1 on 7 cores streams all 51 MB of weights per inference; a load issued only
    // after the barrier leaves DDR idle while the barrier and the first tile wait.
    let l = resnet50(7, 1);
    let loads_weights_for = |op: &Op, conv: &Op| match (op, conv) {
        (Op::DmaIn { dst, src, .. }, Op::Conv2d { weight, .. }) => {
            src.space == Space::Ddr && src.offset < l.constants_bytes && dst.offset == weight.offset
        }
        _ => false,
    };
    let mut exposed = 0;
    let mut later_convs = 0;
    for stream in &l.streams {
        let layers = layers(stream);
        for (i, layer) in layers.iter().enumerate().skip(1).take(l.layers.len() - 1) {
            if l.layers[i].op_type != "Conv" {
                continue;
            }
            later_convs += 1;
            // Exposed: the layer itself loads the weights its first convolution reads.
            let Some(at) = layer.iter().position(|op| matches!(op, Op::Conv2d { .. })) else { continue };
            if layer[..at].iter().any(|op| loads_weights_for(op, &layer[at])) {
                exposed += 1;
            }
        }
    }
    assert!(later_convs > 7 * 50, "{later_convs} convolution layers over the cores");
    assert_eq!(exposed, 0, "{exposed} of {later_convs} (core, layer) pairs wait for their first weights");
}

#[test]
fn pool_reads_say_how_many_bytes_other_cores_hold() {
    let one = resnet50(1, 2);
    assert!(one.layers.iter().all(|r| r.peer_bytes == 0));
    let two = resnet50(2, 4);
    let mut pool_read = 0;
    let mut peer = 0;
    for op in two.streams.iter().flatten() {
        if let Op::DmaIn { src, peer_bytes, .. } = op {
            assert!(u64::from(*peer_bytes) <= src.packed_bytes());
            if src.space == Space::Pool {
                pool_read += src.packed_bytes();
                peer += u64::from(*peer_bytes);
            } else {
                assert_eq!(*peer_bytes, 0, "a DDR read held by another core: {op:?}");
            }
        }
    }
    assert_eq!(peer, two.layers.iter().map(|r| r.peer_bytes).sum::<u64>());
    // Two cores split the output channels of most layers: a real share of what a core
    // reads was written by the other one, but far from all of it.
    assert!(peer * 10 > pool_read && peer * 2 < pool_read, "{peer} of {pool_read} pool bytes read cross cores");
    // The same compile gives the same figures.
    assert_eq!(resnet50(2, 4).streams, two.streams);
}
