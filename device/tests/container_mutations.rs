//! Random mutations of a valid program container: parsing never panics, every failure
//! is an error that says what is wrong, and anything accepted is a consistent image.

use aicsim_abi::container::{reseal, ConstantBlob, IoBinding, IoDType, IoDirection, Layer, ProgramImage};
use aicsim_abi::isa::{BinaryKind, DType, Instruction, Op, Tensor};
use proptest::prelude::*;

fn valid() -> Vec<u8> {
    let ops = [
        Op::DmaIn {
            dst: Tensor::vtcm(0, DType::F32, &[32]),
            src: Tensor::ddr(0, DType::F32, &[32]),
            multicast: 0,
            peer_bytes: 0,
        },
        Op::Binary {
            kind: BinaryKind::Add,
            dst: Tensor::vtcm(128, DType::F32, &[16]),
            a: Tensor::vtcm(0, DType::F32, &[16]),
            b: Tensor::vtcm(64, DType::F32, &[16]),
        },
        Op::DmaOut { dst: Tensor::ddr(128, DType::F32, &[16]), src: Tensor::vtcm(128, DType::F32, &[16]) },
        Op::End,
    ];
    let io = |name: &str, direction, ddr_offset| IoBinding::new(name, direction, IoDType::F32, &[4, 4], ddr_offset);
    ProgramImage {
        name: "mutant".into(),
        batch_size: 2,
        ddr_bytes: 4096,
        vtcm_bytes: 256,
        bindings: vec![io("x", IoDirection::Input, 0), io("y", IoDirection::Output, 128)],
        cores: vec![ops.iter().map(|&o| Instruction::encode(o)).collect(), vec![Instruction::encode(Op::End)]],
        constants: vec![ConstantBlob { ddr_offset: 64, data: (0..64).collect() }],
        layers: vec![
            Layer { name: "load".into(), op_type: "Identity".into(), starts: vec![0, 0] },
            Layer { name: "add".into(), op_type: "Add".into(), starts: vec![1, 1] },
        ],
        entries: Vec::new(),
    }
    .to_bytes()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bits: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Overwrite a little-endian u32/u64 field with an extreme value.
    Extreme {
        at: usize,
        wide: bool,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![Just(0u64), Just(1), Just(u32::MAX as u64), Just(u64::MAX), Just(1 << 31), any::<u64>()];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), any::<bool>(), extreme).prop_map(|(at, wide, value)| Mutation::Extreme { at, wide, value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, bits } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= bits;
            }
        }
        Mutation::Set { at, value } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *value;
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Insert { at, bytes: extra } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Extreme { at, wide, value } => {
            let width = if *wide { 8 } else { 4 };
            let at = (at % n) / width * width;
            if at + width <= bytes.len() {
                bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
    }
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match ProgramImage::parse(bytes) {
        Ok(image) => {
            // Whatever is accepted is self-consistent: every binding and constant fits
            // its DDR, and it serialises back to an identical parse.
            for b in &image.bindings {
                prop_assert!(b.ddr_offset + b.size_bytes <= image.ddr_bytes);
            }
            for c in &image.constants {
                prop_assert!(c.ddr_offset + c.data.len() as u64 <= image.ddr_bytes);
            }
            prop_assert_eq!(ProgramImage::parse(&image.to_bytes()), Ok(image));
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// With the checksum left as is, any mutation is caught and named.
    #[test]
    fn a_mutated_container_is_rejected_with_a_message_and_never_panics(ms in proptest::collection::vec(mutation(), 1..4)) {
        let original = valid();
        let mut bytes = original.clone();
        for m in &ms {
            apply(&mut bytes, m);
        }
        if bytes != original {
            prop_assert!(ProgramImage::parse(&bytes).is_err());
        }
        check(&bytes)?;
    }

    /// With the checksum recomputed, the structural checks behind it are exercised:
    /// still no panic, and anything accepted is consistent.
    #[test]
    fn a_mutated_and_resealed_container_never_panics_and_accepts_only_consistent_images(ms in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = valid();
        for m in &ms {
            apply(&mut bytes, m);
        }
        reseal(&mut bytes);
        check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with and without a valid header in front and the checksum made
    /// to match: no panic, and an error whenever the result is not a consistent image.
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(tail in proptest::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
        let mut bytes = if header { valid()[..64].to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        if header {
            let len = bytes.len() as u64;
            bytes[16..24].copy_from_slice(&len.to_le_bytes());
            reseal(&mut bytes);
        }
        check(&bytes)?;
    }
}

#[test]
fn structural_errors_name_the_section_and_bound() {
    let bytes = valid();
    // Section table entry 1 (io) offset field: point it past the end of the file.
    let mut b = bytes.clone();
    let entry = 64 + 24;
    b[entry + 8..entry + 16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    reseal(&mut b);
    let err = ProgramImage::parse(&b).unwrap_err().to_string();
    assert!(err.contains("section 1 (io)") && err.contains("past the end"), "{err}");
    // Shrink the code section so the instruction stream is cut short.
    let mut b = bytes.clone();
    let entry = 64 + 2 * 24;
    let len = u64::from_le_bytes(b[entry + 16..entry + 24].try_into().unwrap());
    b[entry + 16..entry + 24].copy_from_slice(&(len - 40).to_le_bytes());
    reseal(&mut b);
    let err = ProgramImage::parse(&b).unwrap_err().to_string();
    assert!(err.contains("code section: instruction stream needs"), "{err}");
}
