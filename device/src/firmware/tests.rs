use super::*;
use aicsim_abi::container::{IoBinding, IoDType, IoDirection};
use aicsim_abi::control::CONTROL_VALUES;
use aicsim_abi::dbc::{DoorbellWidth, SemOp};
use aicsim_abi::isa::{BinaryKind, DType, Instruction, Op, Tensor};
use aicsim_abi::memory::{HeapMemory, SharedMemory};
use alloc::vec;
use core::sync::atomic::Ordering;

const N: u32 = 16;
const BYTES: u64 = N as u64 * 4;

fn config() -> DeviceConfig {
    DeviceConfig {
        num_nsp: 4,
        vtcm_bytes: 64 << 10,
        map: MemoryMap { ring_nelem: 8, host_bytes: 1 << 20, ddr_bytes: 1 << 20 },
        ..Default::default()
    }
}

fn add_program() -> ProgramImage {
    let io = |name: &str, direction, ddr_offset| IoBinding::new(name, direction, IoDType::F32, &[N], ddr_offset);
    ProgramImage {
        name: "add".into(),
        batch_size: 1,
        ddr_bytes: 3 * BYTES,
        vtcm_bytes: 3 * BYTES,
        bindings: vec![
            io("x", IoDirection::Input, 0),
            io("y", IoDirection::Input, BYTES),
            io("z", IoDirection::Output, 2 * BYTES),
        ],
        cores: vec![[
            Op::DmaIn {
                dst: Tensor::vtcm(0, DType::F32, &[2 * N]),
                src: Tensor::ddr(0, DType::F32, &[2 * N]),
                multicast: 0,
                peer_bytes: 0,
            },
            Op::Binary {
                kind: BinaryKind::Add,
                dst: Tensor::vtcm(2 * BYTES, DType::F32, &[N]),
                a: Tensor::vtcm(0, DType::F32, &[N]),
                b: Tensor::vtcm(BYTES, DType::F32, &[N]),
            },
            Op::DmaOut {
                dst: Tensor::ddr(2 * BYTES, DType::F32, &[N]),
                src: Tensor::vtcm(2 * BYTES, DType::F32, &[N]),
            },
            Op::End,
        ]
        .iter()
        .map(|&o| Instruction::encode(o))
        .collect()],
        constants: vec![],
        layers: Vec::new(),
        entries: Vec::new(),
    }
}

/// The firmware plus just enough of a host to drive one channel by hand.
struct Rig {
    fw: Firmware,
    mem: HeapMemory,
    map: MemoryMap,
    /// The host's ends of the channel's rings.
    requests: Producer,
    responses: Consumer,
    info: ActivationInfo,
    dbc: usize,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_config(config())
    }

    fn with_config(cfg: DeviceConfig) -> Rig {
        let mem = HeapMemory::new(cfg.map.total_bytes() as usize);
        // Every channel may reach all of host memory (the IOMMU has its own tests).
        for dbc in 0..NUM_DBC {
            aicsim_abi::iommu::map(&mem, &cfg.map, dbc, cfg.map.host_offset(), cfg.map.host_bytes);
        }
        let mut fw = Firmware::new(cfg);
        fw.boot(&mem);
        let ring = Ring::new(cfg.map.ring_nelem).unwrap();
        let mut rig = Rig {
            fw,
            mem,
            map: cfg.map,
            requests: Producer::new(ring),
            responses: Consumer::new(ring),
            info: ActivationInfo::from_values([0; CONTROL_VALUES]),
            dbc: 3,
        };
        let image = add_program().to_bytes();
        let at = rig.map.host_offset() + (512 << 10);
        rig.mem.write(at, &image).unwrap();
        let (status, v, _) = rig.control(ControlCommand::LoadProgram { host_addr: at, len: image.len() as u64 });
        assert_eq!(status, ControlStatus::Ok);
        let (status, v, msg) = rig.control(ControlCommand::Activate { program: v[0] as u32, dbc: rig.dbc as u32 });
        assert_eq!(status, ControlStatus::Ok, "{msg}");
        rig.info = ActivationInfo::from_values(v);
        rig
    }

    fn control(&mut self, cmd: ControlCommand) -> (ControlStatus, ControlValues, String) {
        aicsim_abi::control::post(&self.mem, cmd.encode()).unwrap();
        assert!(self.fw.service(&self.mem).control);
        let mut raw = [0u8; 64];
        self.mem.read(layout::CTRL_RESPONSE_OFFSET, &mut raw).unwrap();
        let rsp: ControlResponse = bytemuck::pod_read_unaligned(&raw);
        let mut msg = vec![0u8; rsp.message_len as usize];
        self.mem.read(layout::CTRL_RESPONSE_OFFSET + 64, &mut msg).unwrap();
        (ControlStatus::from_raw(rsp.status).unwrap(), rsp.values, String::from_utf8(msg).unwrap())
    }

    /// Services until nothing progresses; returns the elements consumed.
    fn run(&mut self) -> u32 {
        let mut elements = 0;
        loop {
            let done = self.fw.service(&self.mem);
            elements += done.elements;
            if !done.progressed() {
                return elements;
            }
        }
    }

    fn host(&self, slot: u64) -> u64 {
        self.map.host_offset() + slot * 4096
    }

    /// On the simulated clock, with a host that promises nothing yet and answers a
    /// waking response within `lookahead_ns`.
    fn unbounded_host(lookahead_ns: u64) -> Rig {
        let rig = Rig::with_config(timed_config());
        rig.mem.store_u64(rig.map.clock_reg(rig.dbc, aicsim_abi::clock::LOOKAHEAD_NS), lookahead_ns, Release);
        rig.mem.store_u64(
            rig.map.clock_reg(rig.dbc, aicsim_abi::clock::PROMISE_NS),
            aicsim_abi::clock::NO_PROMISE,
            Release,
        );
        rig
    }

    /// Stamps the next element to push (simulated clock).
    fn stamp(&mut self, time_ns: u64, flags: u32) {
        let stamp = aicsim_abi::clock::RequestStamp { time_ns, flags, crc: 0 };
        self.mem.write(self.map.request_stamp(self.dbc, self.requests.slot()), bytemuck::bytes_of(&stamp)).unwrap();
    }

    fn push(&mut self, e: RequestElement) {
        let ix = SharedIndices::host_requests(&self.mem, &self.map, self.dbc);
        assert!(self.requests.room(&ix, 1).unwrap() > 0, "the request ring is full");
        let slot = self.requests.slot();
        self.mem.write(self.map.request_element(self.dbc, slot), bytemuck::bytes_of(&e)).unwrap();
        let crc = aicsim_abi::dbc::element_crc(bytemuck::cast_ref(&e));
        self.mem.write(self.map.request_stamp(self.dbc, slot) + 12, &crc.to_le_bytes()).unwrap();
        self.requests.push();
        self.requests.publish(&ix);
    }

    fn responses(&mut self) -> Vec<ResponseElement> {
        let ix = SharedIndices::host_responses(&self.mem, &self.map, self.dbc);
        self.responses.refresh(&ix).unwrap();
        let mut out = vec![];
        while self.responses.pending() > 0 {
            let mut raw = [0u8; 4];
            self.mem.read(self.map.response_element(self.dbc, self.responses.slot()), &mut raw).unwrap();
            out.push(bytemuck::pod_read_unaligned(&raw));
            self.responses.pop();
        }
        self.responses.publish(&ix);
        out
    }

    fn sem(&self, op: SemOp, index: u8, value: u16, presync: bool) -> u32 {
        SemCommand { op, index, value, presync, inbound_fence: false, outbound_fence: false }.encode()
    }

    fn send_element(&self, req_id: u16, host: u64, ddr: u64, last: bool) -> RequestElement {
        let mut e = RequestElement {
            req_id,
            cmd: Cmd { direction: Direction::ToDevice, completion: true, bulk: true, force_msi: false }.encode(),
            src_addr: host,
            dest_addr: self.info.ddr_base + ddr,
            len: BYTES as u32,
            ..Default::default()
        };
        e.sem_cmd[0] = self.sem(SemOp::Inc, self.info.sem_inputs, 1, false);
        if last {
            e.db_addr = self.info.doorbell;
            e.db_attr = DoorbellAttr::encode(Some(DoorbellAttr { width: DoorbellWidth::Bits32 }));
            e.db_data = 1;
        }
        e
    }

    fn fetch_element(&self, req_id: u16, ddr: u64, host: u64) -> RequestElement {
        let mut e = RequestElement {
            req_id,
            cmd: Cmd { direction: Direction::FromDevice, completion: true, bulk: true, force_msi: false }.encode(),
            src_addr: self.info.ddr_base + ddr,
            dest_addr: host,
            len: BYTES as u32,
            ..Default::default()
        };
        e.sem_cmd[0] = self.sem(SemOp::P, self.info.sem_outputs, 0, true);
        e
    }

    fn write_f32(&self, at: u64, values: &[f32]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.mem.write(at, &bytes).unwrap();
    }

    fn read_f32(&self, at: u64) -> Vec<f32> {
        let mut bytes = vec![0u8; BYTES as usize];
        self.mem.read(at, &mut bytes).unwrap();
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    /// Queues one whole inference with req_ids `id, id+1, id+2` and returns the inputs.
    fn inference(&mut self, id: u16, seed: f32) -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..N).map(|i| seed + i as f32).collect();
        let y: Vec<f32> = (0..N).map(|i| seed * 0.5 - i as f32).collect();
        self.write_f32(self.host(0), &x);
        self.write_f32(self.host(1), &y);
        let (h0, h1, h2) = (self.host(0), self.host(1), self.host(2));
        self.push(self.send_element(id, h0, 0, false));
        self.push(self.send_element(id.wrapping_add(1), h1, BYTES, true));
        self.push(self.fetch_element(id.wrapping_add(2), 2 * BYTES, h2));
        (x, y)
    }
}

#[test]
fn one_inference_moves_real_data_and_completes_every_element() {
    let mut rig = Rig::new();
    let (x, y) = rig.inference(100, 1.25);
    assert_eq!(rig.run(), 3);
    let rsp = rig.responses();
    assert_eq!(
        rsp,
        vec![
            ResponseElement { req_id: 100, status: 0 },
            ResponseElement { req_id: 101, status: 0 },
            ResponseElement { req_id: 102, status: 0 }
        ]
    );
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    assert_eq!(rig.read_f32(rig.host(2)), want);
    assert!(rig.fw.device_cycles() > 0);
    let stats = rig.fw.last_run(rig.dbc).unwrap();
    assert!(stats.start_cycle <= rig.fw.config().cost.dispatch_jitter_cycles, "dispatched within the jitter");
    assert_eq!(
        rig.fw.now_cycles(),
        stats.start_cycle + rig.fw.device_cycles(),
        "one run: its dispatch, then its length"
    );
    assert_eq!(stats.cores.len(), 1);
    assert_eq!(stats.cores[0].instructions, 4);
    assert_eq!(stats.ddr_bytes, 3 * BYTES);
}

#[test]
fn bad_elements_get_error_codes_and_the_channel_keeps_serving() {
    let mut rig = Rig::new();
    let good = rig.send_element(1, rig.host(0), 0, false);
    let mut illegal_dir = good;
    illegal_dir.cmd |= 0b11;
    let mut host_oob = good;
    host_oob.req_id = 2;
    host_oob.src_addr = rig.map.host_offset() + rig.map.host_bytes - 8;
    let mut dev_oob = good;
    dev_oob.req_id = 3;
    dev_oob.dest_addr = rig.info.ddr_base + rig.info.ddr_bytes;
    let mut foreign_sem = good;
    foreign_sem.req_id = 4;
    foreign_sem.sem_cmd[0] = rig.sem(SemOp::Inc, 31, 1, false);
    let mut sem_index_33 = good;
    sem_index_33.req_id = 5;
    sem_index_33.sem_cmd[0] |= 1 << 21;
    let mut two_presync = good;
    two_presync.req_id = 6;
    two_presync.sem_cmd =
        [rig.sem(SemOp::Inc, rig.info.sem_inputs, 1, true), rig.sem(SemOp::Inc, rig.info.sem_inputs, 1, true), 0, 0];
    for e in [illegal_dir, host_oob, dev_oob] {
        rig.push(e);
    }
    rig.fw.service(&rig.mem);
    for e in [foreign_sem, sem_index_33, two_presync] {
        rig.push(e);
    }
    rig.fw.service(&rig.mem);
    let codes: Vec<(u16, Option<CompletionCode>)> =
        rig.responses().iter().map(|r| (r.req_id, CompletionCode::from_status(r.status))).collect();
    assert_eq!(
        codes,
        vec![
            (1, Some(CompletionCode::IllegalDirection)),
            (2, Some(CompletionCode::HostAddressOutOfRange)),
            (3, Some(CompletionCode::DeviceAddressOutOfRange)),
            (4, Some(CompletionCode::BadSemaphore)),
            (5, Some(CompletionCode::BadSemaphore)),
            (6, Some(CompletionCode::MultiplePresync)),
        ]
    );
    // No bad element touched the input semaphore, and a good inference still works.
    assert_eq!(rig.mem.load_u32(rig.map.semaphore(rig.info.sem_inputs), Acquire), 0);
    let (x, y) = rig.inference(10, 3.0);
    rig.run();
    assert!(rig.responses().iter().all(|r| r.status == 0));
    assert_eq!(rig.read_f32(rig.host(2)), x.iter().zip(&y).map(|(a, b)| a + b).collect::<Vec<_>>());
}

#[test]
fn an_output_waits_at_the_head_until_its_program_ran() {
    let mut rig = Rig::new();
    let e = rig.fetch_element(7, 2 * BYTES, rig.host(2));
    rig.push(e);
    assert_eq!(rig.fw.service(&rig.mem).elements, 0);
    assert_eq!(rig.mem.load_u32(rig.map.dbc_reg(rig.dbc, aicsim_abi::dbc::REQ_HEAD), Acquire), 0);
    assert!(rig.responses().is_empty());
    // Releasing the semaphore by hand (as a finished program would) lets it through.
    rig.mem.store_u32(rig.map.semaphore(rig.info.sem_outputs), 1, Release);
    assert_eq!(rig.fw.service(&rig.mem).elements, 1);
    assert_eq!(rig.responses(), vec![ResponseElement { req_id: 7, status: 0 }]);
}

#[test]
fn msi_is_raised_only_when_the_response_ring_goes_from_empty_to_non_empty() {
    let mut rig = Rig::new();
    let msi = |rig: &Rig| rig.mem.load_u32(layout::MSI_SEQ, Acquire);
    rig.push(rig.send_element(0, rig.host(0), 0, false));
    rig.fw.service(&rig.mem);
    assert_eq!(msi(&rig), 1);
    rig.push(rig.send_element(1, rig.host(0), 0, false));
    rig.fw.service(&rig.mem);
    assert_eq!(msi(&rig), 1, "ring was not empty: no new MSI");
    assert_eq!(rig.responses().len(), 2);
    rig.push(rig.send_element(2, rig.host(0), 0, false));
    rig.fw.service(&rig.mem);
    assert_eq!(msi(&rig), 2);
    assert_eq!(rig.mem.load_u32(layout::MSI_PENDING, Acquire), 1 << rig.dbc);
}

#[test]
fn a_full_response_ring_stalls_the_channel_until_the_host_consumes() {
    let mut rig = Rig::new();
    for id in 0..7 {
        rig.push(rig.send_element(id, rig.host(0), 0, false));
    }
    assert_eq!(rig.fw.service(&rig.mem).elements, 7);
    // Ring of 8 holds 7: the response ring is now full.
    for id in 7..10 {
        rig.push(rig.send_element(id, rig.host(0), 0, false));
    }
    assert_eq!(rig.fw.service(&rig.mem).elements, 0);
    assert_eq!(rig.responses().len(), 7);
    assert_eq!(rig.fw.service(&rig.mem).elements, 3);
    assert_eq!(rig.responses().iter().map(|r| r.req_id).collect::<Vec<_>>(), vec![7, 8, 9]);
}

#[test]
fn control_errors_say_what_is_wrong() {
    let mut rig = Rig::new();
    let (status, _, msg) = rig.control(ControlCommand::Activate { program: 0, dbc: 3 });
    assert_eq!(status, ControlStatus::ChannelInUse);
    assert!(msg.contains("channel 3 already"), "{msg}");
    let (status, _, msg) = rig.control(ControlCommand::Activate { program: 9, dbc: 4 });
    assert_eq!(status, ControlStatus::NotFound);
    assert!(msg.contains("program 9"), "{msg}");
    let (status, v, _) = rig.control(ControlCommand::Status);
    assert_eq!(status, ControlStatus::Ok);
    let report = StatusReport::from_values(v);
    assert_eq!((report.nsp_total, report.nsp_free, report.active_channels), (4, 3, 1 << 3));
    let mut bad = add_program();
    bad.vtcm_bytes = 1 << 30;
    let bytes = bad.to_bytes();
    let at = rig.host(10);
    rig.mem.write(at, &bytes).unwrap();
    let (status, _, msg) = rig.control(ControlCommand::LoadProgram { host_addr: at, len: bytes.len() as u64 });
    assert_eq!(status, ControlStatus::Rejected);
    assert!(msg.contains("VTCM"), "{msg}");
    assert_eq!(rig.control(ControlCommand::Deactivate { dbc: 3 }).0, ControlStatus::Ok);
    let report = StatusReport::from_values(rig.control(ControlCommand::Status).1);
    assert_eq!((report.nsp_free, report.active_channels, report.ddr_free), (4, 0, 1 << 20));
}

#[test]
fn a_program_whose_operands_overflow_vtcm_is_rejected_naming_core_instruction_and_bound() {
    let mut rig = Rig::new();
    let mut image = add_program();
    image.vtcm_bytes = 4096;
    image.cores.push(
        [
            Op::DmaIn {
                dst: Tensor::vtcm(4064, DType::F32, &[N]),
                src: Tensor::ddr(0, DType::F32, &[N]),
                multicast: 0,
                peer_bytes: 0,
            },
            Op::End,
        ]
        .iter()
        .map(|&o| Instruction::encode(o))
        .collect(),
    );
    let bytes = image.to_bytes();
    let at = rig.host(20);
    rig.mem.write(at, &bytes).unwrap();
    let (status, _, msg) = rig.control(ControlCommand::LoadProgram { host_addr: at, len: bytes.len() as u64 });
    assert_eq!(status, ControlStatus::Rejected);
    assert_eq!(msg, "program 'add': core 1, instruction 0: DMA destination spans VTCM [0xfe0, 0xfe0 + 0x40), past the core's 0x1000-byte VTCM");
}

#[test]
fn a_faulting_program_fails_its_outputs_with_program_fault_and_the_channel_recovers() {
    let mut rig = Rig::new();
    let mut image = add_program();
    // A second core that waits for a signal nobody sends: the run deadlocks.
    image.cores.push([Op::Wait { counter: 0, value: 1 }, Op::End].iter().map(|&o| Instruction::encode(o)).collect());
    let bytes = image.to_bytes();
    let at = rig.host(30);
    rig.mem.write(at, &bytes).unwrap();
    let (status, v, msg) = rig.control(ControlCommand::LoadProgram { host_addr: at, len: bytes.len() as u64 });
    assert_eq!(status, ControlStatus::Ok, "{msg}");
    assert_eq!(rig.control(ControlCommand::Deactivate { dbc: 3 }).0, ControlStatus::Ok);
    let (status, values, msg) = rig.control(ControlCommand::Activate { program: v[0] as u32, dbc: 3 });
    assert_eq!(status, ControlStatus::Ok, "{msg}");
    rig.info = ActivationInfo::from_values(values);
    rig.requests.reset(&SharedIndices::host_requests(&rig.mem, &rig.map, 3));
    rig.responses.reset(&SharedIndices::host_responses(&rig.mem, &rig.map, 3));
    rig.inference(1, 1.0);
    rig.run();
    let codes: Vec<u16> = rig.responses().iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![0, 0, CompletionCode::ProgramFault as u16], "inputs land; the output carries the fault");
    // The next run faults the same way but the channel keeps serving it.
    rig.inference(4, 2.0);
    rig.run();
    assert_eq!(rig.responses().len(), 3);
}

#[test]
fn each_run_publishes_a_record_the_host_can_read_once_its_outputs_are_taken() {
    let mut rig = Rig::new();
    let read = |rig: &Rig, seq: u64| {
        let mut raw = [0u8; 64];
        rig.mem.read(rig.map.run_record(rig.dbc, seq), &mut raw).unwrap();
        bytemuck::pod_read_unaligned::<RunRecord>(&raw)
    };
    for seq in 1..=3u64 {
        rig.inference(seq as u16 * 10, seq as f32);
        rig.run();
        assert!(rig.responses().iter().all(|r| r.status == 0));
        let r = read(&rig, seq);
        assert_eq!(r.seq, seq);
        assert_eq!(r.status, 0);
        assert!(
            r.idle_since_cycle <= r.ready_cycle && r.ready_cycle <= r.start_cycle && r.start_cycle < r.end_cycle,
            "{r:?}"
        );
        assert!(r.outputs_taken_cycle >= r.end_cycle, "{r:?}");
        assert_eq!(r.exec_cycles(), rig.fw.last_run(rig.dbc).unwrap().cycles());
        if seq > 1 {
            assert_eq!(r.idle_since_cycle, read(&rig, seq - 1).end_cycle);
        }
    }
}

/// The simulated clock with a slow host link (64 B/us: one element of this program per
/// microsecond) and no dispatch jitter, so every time below is exact.
fn timed_config() -> DeviceConfig {
    let mut cfg = config();
    cfg.pacing = Pacing::Simulated;
    cfg.cost.host_link_bytes_per_second = 64_000_000;
    cfg.cost.dispatch_jitter_cycles = 0;
    cfg
}

const US: u64 = 1_000;

impl Rig {
    /// One inference whose elements all reach the channel at `at_ns`; with `wakes`, its
    /// output's response is one the host reacts to.
    fn timed_inference(&mut self, id: u16, at_ns: u64, wakes: bool) {
        let (h0, h1, h2) = (self.host(0), self.host(1), self.host(2));
        for (i, e) in [
            self.send_element(id, h0, 0, false),
            self.send_element(id.wrapping_add(1), h1, BYTES, true),
            self.fetch_element(id.wrapping_add(2), 2 * BYTES, h2),
        ]
        .into_iter()
        .enumerate()
        {
            self.stamp(at_ns, if i == 2 && wakes { aicsim_abi::clock::STAMP_WAKES_HOST } else { 0 });
            self.push(e);
        }
    }

    /// The response stamps of the responses the host has not read yet, in ns.
    fn response_times(&self) -> Vec<u64> {
        // A copy of the host's end: looking does not take the responses.
        let mut peek = self.responses;
        peek.refresh(&SharedIndices::host_responses(&self.mem, &self.map, self.dbc)).unwrap();
        let mut out = vec![];
        while peek.pending() > 0 {
            let mut raw = [0u8; 8];
            self.mem.read(self.map.response_stamp(self.dbc, peek.slot()), &mut raw).unwrap();
            out.push(u64::from_le_bytes(raw));
            peek.pop();
        }
        out
    }
}

#[test]
fn on_the_simulated_clock_an_element_waits_for_its_time_then_for_the_link() {
    let mut rig = Rig::with_config(timed_config());
    rig.timed_inference(100, 50 * US, false);
    assert_eq!(rig.run(), 3);
    let run = rig.fw.last_run(rig.dbc).unwrap();
    let hz = rig.fw.config().clock_hz;
    let ns = |cycles: u64| aicsim_abi::clock::ns_at_or_after(cycles, hz);
    // The inputs cross the link one after the other from 50 us; the program starts
    // when the second has landed; the output crosses after the program.
    let times = rig.response_times();
    assert_eq!(times.len(), 3);
    assert_eq!(times[0], 51 * US, "first input: its time, then 1 us on the link");
    assert_eq!(times[1], 52 * US, "second input waits for the link");
    assert_eq!(ns(run.start_cycle), 52 * US, "the program starts when its inputs have landed");
    assert_eq!(
        times[2],
        ns(run.end_cycle + aicsim_abi::clock::cycles_at_or_after(US, hz)),
        "output: the program, then the link"
    );
    assert_eq!(rig.mem.load_u32(layout::LATE_ELEMENTS, Acquire), 0);
}

#[test]
fn the_device_stops_short_of_the_hosts_promise_and_says_how_far_it_got() {
    let mut rig = Rig::with_config(timed_config());
    let promise = 80 * US;
    rig.mem.store_u64(rig.map.clock_reg(rig.dbc, aicsim_abi::clock::PROMISE_NS), promise, Release);
    // Something to do before the promise, and something after it.
    rig.timed_inference(1, 10 * US, false);
    rig.timed_inference(4, 200 * US, false);
    rig.run();
    let now = rig.mem.load_u64(layout::DEVICE_NOW_NS, Acquire);
    assert!(now < promise && now + 1 >= promise - 1, "simulated up to just before the promise: {now}");
    assert_eq!(rig.responses().len(), 3, "the inference before the promise completed, the one after did not start");
    // The host moves its promise on: the second inference goes through.
    rig.mem.store_u64(
        rig.map.clock_reg(rig.dbc, aicsim_abi::clock::PROMISE_NS),
        aicsim_abi::clock::NO_PROMISE,
        Release,
    );
    rig.run();
    assert_eq!(rig.response_times().first().copied(), Some(201 * US));
    assert_eq!(rig.responses().len(), 3);
    assert_eq!(rig.mem.load_u32(layout::LATE_ELEMENTS, Acquire), 0);
}

#[test]
fn inputs_queued_behind_a_waiting_output_cross_the_link_during_the_run_but_land_in_order() {
    let mut rig = Rig::with_config(timed_config());
    rig.timed_inference(1, 10 * US, false);
    rig.timed_inference(4, 10 * US, false);
    assert_eq!(rig.run(), 6);
    let hz = rig.fw.config().clock_hz;
    let link = aicsim_abi::clock::cycles_at_or_after(US, hz);
    let mut raw = [0u8; 64];
    let record = |rig: &Rig, seq: u64, raw: &mut [u8; 64]| {
        rig.mem.read(rig.map.run_record(rig.dbc, seq), raw).unwrap();
        bytemuck::pod_read_unaligned::<aicsim_abi::run_record::RunRecord>(raw)
    };
    let (first, second) = (record(&rig, 1, &mut raw), record(&rig, 2, &mut raw));
    // The second inference's inputs cross the inbound link from the moment the first run
    // starts (its output waits at the head), while the first's output crosses the
    // outbound one; in ring order they would only start after that output.
    assert_eq!(second.start_cycle, first.start_cycle + 2 * link, "{first:?} {second:?}");
    assert!(second.start_cycle < first.outputs_taken_cycle + 2 * link);
    assert!(second.ready_cycle >= first.outputs_taken_cycle, "they take effect after the first's output");
    let times = rig.response_times();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "responses in ring order and time: {times:?}");
}

#[test]
fn a_waking_response_holds_the_device_until_the_host_accounts_for_it() {
    let lookahead = 30 * US;
    let mut rig = Rig::unbounded_host(lookahead);
    rig.timed_inference(1, 10 * US, true);
    rig.timed_inference(4, 500 * US, true);
    rig.run();
    let woke = *rig.response_times().last().unwrap();
    assert_eq!(rig.mem.load_u32(rig.map.clock_reg(rig.dbc, aicsim_abi::clock::DEVICE_WAKES), Acquire), 1);
    let now = rig.mem.load_u64(layout::DEVICE_NOW_NS, Acquire);
    assert!(now < woke + lookahead, "held within the lookahead of the completion: {now} vs {woke} + {lookahead}");
    // The host accounts for it (and promises nothing): the device goes on.
    rig.mem.store_u32(rig.map.clock_reg(rig.dbc, aicsim_abi::clock::HOST_ACKED), 1, Release);
    rig.run();
    assert_eq!(rig.mem.load_u32(rig.map.clock_reg(rig.dbc, aicsim_abi::clock::DEVICE_WAKES), Acquire), 2);
}

/// A [`HeapMemory`] that notes, at every publication of the device's progress, the time
/// published and the waking responses posted on channel `dbc` by then.
struct Watching<'a> {
    mem: &'a HeapMemory,
    wakes_reg: u64,
    published: core::cell::RefCell<Vec<(u64, u32)>>,
}

impl SharedMemory for Watching<'_> {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), aicsim_abi::memory::OutOfRange> {
        self.mem.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), aicsim_abi::memory::OutOfRange> {
        self.mem.write(offset, data)
    }
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), aicsim_abi::memory::OutOfRange> {
        self.mem.copy(src, dst, len)
    }
    fn load_u32(&self, offset: u64, order: Ordering) -> u32 {
        self.mem.load_u32(offset, order)
    }
    fn store_u32(&self, offset: u64, value: u32, order: Ordering) {
        self.mem.store_u32(offset, value, order)
    }
    fn fetch_add_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.mem.fetch_add_u32(offset, value, order)
    }
    fn fetch_or_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.mem.fetch_or_u32(offset, value, order)
    }
    fn swap_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.mem.swap_u32(offset, value, order)
    }
    fn compare_exchange_u32(&self, offset: u64, current: u32, new: u32, order: Ordering) -> Result<u32, u32> {
        self.mem.compare_exchange_u32(offset, current, new, order)
    }
    fn load_u64(&self, offset: u64, order: Ordering) -> u64 {
        self.mem.load_u64(offset, order)
    }
    fn store_u64(&self, offset: u64, value: u64, order: Ordering) {
        if offset == layout::DEVICE_NOW_NS {
            let wakes = self.mem.load_u32(self.wakes_reg, Acquire);
            self.published.borrow_mut().push((value, wakes));
        }
        self.mem.store_u64(offset, value, order)
    }
    fn wake(&self, offset: u64) {
        self.mem.wake(offset)
    }
}

#[test]
fn a_waking_response_is_published_at_once_not_when_the_device_reaches_the_horizon() {
    let lookahead = 1_000 * US;
    let mut rig = Rig::unbounded_host(lookahead);
    // The first inference wakes the host; the second, well within the lookahead, does not.
    rig.timed_inference(1, 10 * US, true);
    rig.timed_inference(4, 300 * US, false);
    let watch = Watching {
        mem: &rig.mem,
        wakes_reg: rig.map.clock_reg(rig.dbc, aicsim_abi::clock::DEVICE_WAKES),
        published: Default::default(),
    };
    while rig.fw.service(&watch).progressed() {}
    let published = watch.published.into_inner();
    let times = rig.response_times();
    assert_eq!(times.len(), 6, "both inferences ran within the lookahead");
    let woke = times[2];
    // The host could react to the completion while the device went on with the second
    // inference: it was told of it at the moment it was posted.
    let first = published.iter().find(|p| p.1 == 1).copied();
    assert!(first.is_some_and(|(now, _)| now <= woke && now < times[3]), "{published:?}, woke at {woke}");
    let last = published.last().unwrap();
    assert!(last.0 >= times[5] && last.0 < woke + lookahead, "then up to the horizon: {published:?}");
}

#[test]
fn a_timing_run_on_the_simulated_clock_still_moves_the_inputs_in_and_the_outputs_out() {
    let mut cfg = timed_config();
    cfg.mode = ExecMode::Timing;
    let mut rig = Rig::with_config(cfg);
    let ddr = rig.map.ddr_offset() + rig.info.ddr_base;
    let x: Vec<f32> = (0..N).map(|i| i as f32 + 0.5).collect();
    let y: Vec<f32> = (0..N).map(|i| 100.0 - i as f32).collect();
    rig.write_f32(rig.host(0), &x);
    rig.write_f32(rig.host(1), &y);
    // Nothing is computed in a timing run: the output moves whatever DDR holds there.
    let held: Vec<f32> = (0..N).map(|i| -(i as f32)).collect();
    rig.write_f32(ddr + 2 * BYTES, &held);
    rig.timed_inference(1, 5 * US, false);
    assert_eq!(rig.run(), 3);
    assert!(rig.responses().iter().all(|r| r.status == 0));
    assert_eq!(rig.read_f32(ddr), x, "first input landed in DDR");
    assert_eq!(rig.read_f32(ddr + BYTES), y, "second input landed in DDR");
    assert_eq!(rig.read_f32(rig.host(2)), held, "the output's bytes reached the host");
}

#[test]
fn a_long_control_message_is_cut_at_a_character_not_inside_one() {
    let limit = layout::CTRL_MESSAGE_BYTES as usize;
    // Two-byte characters after one byte: the limit falls inside a character.
    let long: String = core::iter::once('x').chain(core::iter::repeat('é')).take(limit).collect();
    let cut = control::mailbox_message(&long);
    assert!(cut.len() <= limit && cut.len() >= limit - 1, "{} bytes", cut.len());
    assert!(long.starts_with(cut.as_str()));
    assert_eq!(control::mailbox_message("short").as_str(), "short");
}

#[test]
fn an_activations_ddr_is_scrubbed_before_the_next_activation_gets_it() {
    let mut rig = Rig::new();
    let ddr = rig.map.ddr_offset() + rig.info.ddr_base;
    let secret = vec![7.25f32; N as usize];
    rig.write_f32(rig.host(0), &secret);
    rig.push(rig.send_element(0, rig.host(0), 0, false));
    rig.run();
    assert_eq!(rig.read_f32(ddr), secret, "the input landed in the activation's DDR");
    let (status, _, msg) = rig.control(ControlCommand::Deactivate { dbc: rig.dbc as u32 });
    assert_eq!(status, ControlStatus::Ok, "{msg}");
    assert_eq!(rig.read_f32(ddr), vec![0.0; N as usize], "scrubbed when freed");
    // The next activation, on another channel, is given the same extent: zeros.
    let (status, v, msg) = rig.control(ControlCommand::Activate { program: 0, dbc: 5 });
    assert_eq!(status, ControlStatus::Ok, "{msg}");
    let info = ActivationInfo::from_values(v);
    assert_eq!(info.ddr_base, rig.info.ddr_base);
    assert_eq!(rig.read_f32(rig.map.ddr_offset() + info.ddr_base), vec![0.0; N as usize]);
}

#[test]
fn an_element_whose_host_pages_are_not_mapped_for_the_channel_moves_nothing() {
    let mut rig = Rig::new();
    let ddr = rig.map.ddr_offset() + rig.info.ddr_base;
    let secret = vec![3.5f32; N as usize];
    rig.write_f32(rig.host(0), &secret);
    // The page holding the source is another user's now: unmapped for this channel.
    aicsim_abi::iommu::unmap(&rig.mem, &rig.map, rig.dbc, rig.host(0), BYTES);
    rig.push(rig.send_element(0, rig.host(0), 0, false));
    rig.run();
    let rsp = rig.responses();
    assert_eq!(rsp.len(), 1);
    assert_eq!(rsp[0].status, CompletionCode::HostAddressNotMapped as u16);
    assert_eq!(rig.read_f32(ddr), vec![0.0; N as usize], "nothing was read from the unmapped page");
    assert_eq!(rig.mem.load_u32(layout::IOMMU_FAULTS, Acquire), 1, "the fault is counted");
    // Mapped again, the same element goes through.
    aicsim_abi::iommu::map(&rig.mem, &rig.map, rig.dbc, rig.host(0), BYTES);
    rig.push(rig.send_element(1, rig.host(0), 0, false));
    rig.run();
    assert!(rig.responses().iter().all(|r| r.status == 0));
    assert_eq!(rig.read_f32(ddr), secret);
}

#[test]
fn an_element_that_does_not_match_its_crc_moves_nothing_and_its_response_is_tagged() {
    let mut rig = Rig::new();
    let ddr = rig.map.ddr_offset() + rig.info.ddr_base;
    rig.write_f32(rig.host(0), &vec![9.0f32; N as usize]);
    let mut e = rig.send_element(7, rig.host(0), 0, false);
    rig.push(e);
    // The element changes in the ring after the host wrote its CRC (a corruption).
    e.len /= 2;
    rig.mem.write(rig.map.request_element(rig.dbc, 0), bytemuck::bytes_of(&e)).unwrap();
    rig.run();
    let rsp = rig.responses();
    assert_eq!(rsp.len(), 1);
    assert_eq!((rsp[0].req_id, rsp[0].status), (7, CompletionCode::CorruptElement as u16));
    assert_eq!(rig.read_f32(ddr), vec![0.0; N as usize]);
    assert_eq!(rig.mem.load_u32(layout::CORRUPT_ELEMENTS, Acquire), 1);
    let mut tag = [0u8; 4];
    rig.mem.read(rig.map.response_tag(rig.dbc, 0), &mut tag).unwrap();
    assert_eq!(u32::from_le_bytes(tag), 0, "the response answers the first element taken");
}
