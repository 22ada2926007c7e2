//! Fuzzing the device's request-element handling with proptest: arbitrary bytes and
//! arbitrary-but-plausible elements on one channel, real inferences on another. The
//! firmware never panics, answers every garbage element exactly once, and keeps serving
//! the good channel correctly.

use aicsim_abi::container::IoDType;
use aicsim_abi::control::{
    ActivationInfo, ControlCommand, ControlResponse, ControlStatus, ControlValues, CONTROL_VALUES,
};
use aicsim_abi::dbc::{
    Cmd, Direction, DoorbellAttr, DoorbellWidth, RequestElement, ResponseElement, Ring, SemCommand, SemOp,
};
use aicsim_abi::layout::{self, MemoryMap};
use aicsim_abi::memory::{HeapMemory, SharedMemory};
use aicsim_abi::ring::{Consumer, Producer, SharedIndices};
use aicsim_device::{DeviceConfig, Firmware};
use proptest::prelude::*;

const NELEM: u32 = 16;

fn copy_program() -> Vec<u8> {
    aicsim_abi::programs::copy_program("copy", IoDType::U8, &[64]).to_bytes()
}

struct Rig {
    fw: Firmware,
    mem: HeapMemory,
    map: MemoryMap,
    /// The host's ends of each channel's rings.
    requests: [Producer; 2],
    responses: [Consumer; 2],
    infos: [ActivationInfo; 2],
}

impl Rig {
    fn new() -> Rig {
        let config = DeviceConfig {
            num_nsp: 2,
            vtcm_bytes: 4096,
            map: MemoryMap { ring_nelem: NELEM, host_bytes: 1 << 20, ddr_bytes: 1 << 20 },
            ..DeviceConfig::default()
        };
        let mem = HeapMemory::new(config.map.total_bytes() as usize);
        for dbc in 0..2 {
            aicsim_abi::iommu::map(&mem, &config.map, dbc, config.map.host_offset(), config.map.host_bytes);
        }
        let mut fw = Firmware::new(config);
        fw.boot(&mem);
        let mut rig = Rig {
            fw,
            mem,
            map: config.map,
            requests: [Producer::new(Ring::new(NELEM).unwrap()); 2],
            responses: [Consumer::new(Ring::new(NELEM).unwrap()); 2],
            infos: [ActivationInfo::from_values([0; CONTROL_VALUES]); 2],
        };
        let image = copy_program();
        let at = rig.map.host_offset() + (512 << 10);
        rig.mem.write(at, &image).unwrap();
        let program = rig.control(ControlCommand::LoadProgram { host_addr: at, len: image.len() as u64 })[0] as u32;
        for dbc in 0..2 {
            rig.infos[dbc] =
                ActivationInfo::from_values(rig.control(ControlCommand::Activate { program, dbc: dbc as u32 }));
        }
        rig
    }

    fn control(&mut self, cmd: ControlCommand) -> ControlValues {
        aicsim_abi::control::post(&self.mem, cmd.encode()).unwrap();
        self.fw.service(&self.mem);
        let mut raw = [0u8; 64];
        self.mem.read(layout::CTRL_RESPONSE_OFFSET, &mut raw).unwrap();
        let rsp: ControlResponse = bytemuck::pod_read_unaligned(&raw);
        assert_eq!(rsp.status, ControlStatus::Ok as u32);
        rsp.values
    }

    fn push(&mut self, dbc: usize, raw: &[u8; 64]) {
        let ix = SharedIndices::host_requests(&self.mem, &self.map, dbc);
        let producer = &mut self.requests[dbc];
        assert!(producer.room(&ix, 1).unwrap() > 0, "the request ring is full");
        self.mem.write(self.map.request_element(dbc, producer.slot()), raw).unwrap();
        let crc = aicsim_abi::dbc::element_crc(raw);
        self.mem.write(self.map.request_stamp(dbc, producer.slot()) + 12, &crc.to_le_bytes()).unwrap();
        producer.push();
        producer.publish(&ix);
    }

    fn drain(&mut self, dbc: usize) -> Vec<ResponseElement> {
        let ix = SharedIndices::host_responses(&self.mem, &self.map, dbc);
        let consumer = &mut self.responses[dbc];
        consumer.refresh(&ix).unwrap();
        let mut out = vec![];
        while consumer.pending() > 0 {
            let mut raw = [0u8; 4];
            self.mem.read(self.map.response_element(dbc, consumer.slot()), &mut raw).unwrap();
            out.push(bytemuck::pod_read_unaligned(&raw));
            consumer.pop();
        }
        consumer.publish(&ix);
        out
    }

    fn run(&mut self) {
        while self.fw.service(&self.mem).progressed() {}
    }

    /// One real inference on channel 1: returns what came back.
    fn good_inference(&mut self, seed: u8) -> (Vec<u8>, Vec<ResponseElement>) {
        let info = self.infos[1];
        let (host_in, host_out) = (self.map.host_offset(), self.map.host_offset() + 4096);
        let data: Vec<u8> = (0..64).map(|i| i ^ seed).collect();
        self.mem.write(host_in, &data).unwrap();
        let mut e_in = RequestElement {
            req_id: 1,
            cmd: Cmd { direction: Direction::ToDevice, completion: true, bulk: true, force_msi: false }.encode(),
            src_addr: host_in,
            dest_addr: info.ddr_base,
            len: 64,
            db_addr: info.doorbell,
            db_attr: DoorbellAttr::encode(Some(DoorbellAttr { width: DoorbellWidth::Bits32 })),
            db_data: 1,
            ..Default::default()
        };
        e_in.sem_cmd[0] = SemCommand {
            op: SemOp::Inc,
            index: info.sem_inputs,
            value: 1,
            presync: false,
            inbound_fence: false,
            outbound_fence: false,
        }
        .encode();
        let mut e_out = RequestElement {
            req_id: 2,
            cmd: Cmd { direction: Direction::FromDevice, completion: true, bulk: true, force_msi: false }.encode(),
            src_addr: info.ddr_base + 64,
            dest_addr: host_out,
            len: 64,
            ..Default::default()
        };
        e_out.sem_cmd[0] = SemCommand {
            op: SemOp::P,
            index: info.sem_outputs,
            value: 0,
            presync: true,
            inbound_fence: false,
            outbound_fence: false,
        }
        .encode();
        self.push(1, bytemuck::cast_ref(&e_in));
        self.push(1, bytemuck::cast_ref(&e_out));
        self.run();
        let responses = self.drain(1);
        let mut out = vec![0u8; 64];
        self.mem.read(host_out, &mut out).unwrap();
        (out.iter().zip(&data).map(|(a, b)| a ^ b).collect(), responses)
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
    let rig = Rig::new();
    let (info, host) = (rig.infos[0], rig.map.host_offset());
    proptest::collection::vec(prop_oneof![any::<[u8; 64]>(), plausible(info, host)], 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn garbage_on_one_channel_never_panics_and_the_other_channel_keeps_serving(garbage in garbage()) {
        let mut rig = Rig::new();
        let mut pushed = 0u32;
        let mut answered = 0usize;
        for (k, g) in garbage.iter().enumerate() {
            rig.push(0, g);
            pushed += 1;
            rig.run();
            answered += rig.drain(0).len();
            let (diff, responses) = rig.good_inference(k as u8);
            prop_assert!(diff.iter().all(|&d| d == 0), "the good channel's data came back intact");
            prop_assert!(responses.iter().all(|r| r.status == 0) && responses.len() == 2);
        }
        // A garbage element either answered (with its status) or is still blocked at
        // the head of its ring waiting on a semaphore; never answered twice.
        prop_assert!(answered as u32 <= pushed);
    }
}
