//! The host's end of a device without a driver: the firmware on heap memory, driven by
//! hand through the real control mailbox and DMA Bridge Channel rings.
//!
//! For tests, benchmarks and fuzz targets that exercise the device's parsers and its
//! side of the protocol directly: every command and element goes through the same
//! shared-memory structures the kernel-mode driver uses, only without its threads,
//! buffers and bookkeeping.

use crate::{DeviceConfig, Firmware};
use aicsim_abi::container::{IoDType, ProgramImage};
use aicsim_abi::control::{
    self, ActivationInfo, ControlCommand, ControlRequest, ControlResponse, ControlStatus, ControlValues,
};
use aicsim_abi::dbc::{
    Cmd, Direction, DoorbellAttr, DoorbellWidth, RequestElement, ResponseElement, Ring, SemCommand, SemOp, NUM_DBC,
};
use aicsim_abi::layout::{self, MemoryMap};
use aicsim_abi::memory::{HeapMemory, SharedMemory};
use aicsim_abi::ring::{Consumer, Producer, SharedIndices};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Acquire;

/// The device's answer to one control command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: ControlStatus,
    pub values: ControlValues,
    pub message: String,
}

/// The firmware, its memory, and the host's ends of every channel's rings.
pub struct Rig {
    pub fw: Firmware,
    pub mem: HeapMemory,
    pub map: MemoryMap,
    requests: Vec<Producer>,
    responses: Vec<Consumer>,
}

impl Rig {
    /// Boots a device of this shape. Every channel may reach all of host memory (the
    /// IOMMU is opened wide; tests of the IOMMU narrow it with [`aicsim_abi::iommu`]).
    pub fn new(config: DeviceConfig) -> Rig {
        let mem = HeapMemory::new(config.map.total_bytes() as usize);
        for dbc in 0..NUM_DBC {
            aicsim_abi::iommu::map(&mem, &config.map, dbc, config.map.host_offset(), config.map.host_bytes);
        }
        let mut fw = Firmware::new(config);
        fw.boot(&mem);
        let ring = Ring::new(config.map.ring_nelem).expect("the device accepted this ring size");
        Rig {
            fw,
            mem,
            map: config.map,
            requests: vec![Producer::new(ring); NUM_DBC],
            responses: vec![Consumer::new(ring); NUM_DBC],
        }
    }

    /// A device small enough to boot for every fuzz input: 4 cores, 256 KiB of VTCM
    /// each, 1 MiB of host memory, 2 MiB of DDR, 16-element rings.
    pub fn small() -> Rig {
        Rig::new(DeviceConfig {
            num_nsp: 4,
            vtcm_bytes: 256 << 10,
            map: MemoryMap { ring_nelem: 16, host_bytes: 1 << 20, ddr_bytes: 2 << 20 },
            ..DeviceConfig::default()
        })
    }

    /// Where program containers are staged in host memory: its upper half.
    pub fn staging(&self) -> u64 {
        self.map.host_offset() + self.map.host_bytes / 2
    }

    /// Posts a request body as it is (a fuzzer's, say), lets the device serve its
    /// control mailbox once, and returns its answer; `None` if it did not answer.
    pub fn control_raw(&mut self, req: ControlRequest) -> Option<Reply> {
        let seq = control::post(&self.mem, req).expect("the mailbox is free between commands");
        self.fw.service(&self.mem);
        if !control::answered(&self.mem, seq) {
            return None;
        }
        let mut raw = [0u8; control::RESPONSE_HEADER_BYTES as usize];
        self.mem.read(layout::CTRL_RESPONSE_OFFSET, &mut raw).expect("the mailbox is inside the region");
        let rsp: ControlResponse = bytemuck::pod_read_unaligned(&raw);
        let len = (rsp.message_len as u64).min(layout::CTRL_MESSAGE_BYTES) as usize;
        let mut message = vec![0u8; len];
        self.mem
            .read(layout::CTRL_RESPONSE_OFFSET + control::RESPONSE_HEADER_BYTES, &mut message)
            .expect("the mailbox is inside the region");
        Some(Reply {
            status: ControlStatus::from_raw(rsp.status).expect("the device answers with a known status"),
            values: rsp.values,
            message: String::from_utf8(message).expect("the device's messages are UTF-8"),
        })
    }

    /// Runs one control command; the device must answer it.
    pub fn control(&mut self, cmd: ControlCommand) -> Reply {
        self.control_raw(cmd.encode()).expect("the device answers a control command at once")
    }

    /// Copies a program container to host memory at `host_addr` and loads it.
    pub fn load(&mut self, image: &[u8], host_addr: u64) -> Result<u32, Reply> {
        self.mem.write(host_addr, image).map_err(|e| Reply {
            status: ControlStatus::InvalidArgument,
            values: [0; control::CONTROL_VALUES],
            message: alloc::format!("{e}"),
        })?;
        let reply = self.control(ControlCommand::LoadProgram { host_addr, len: image.len() as u64 });
        match reply.status {
            ControlStatus::Ok => Ok(reply.values[0] as u32),
            _ => Err(reply),
        }
    }

    /// Activates a loaded program on channel `dbc`.
    pub fn activate(&mut self, program: u32, dbc: usize) -> Result<ActivationInfo, Reply> {
        let reply = self.control(ControlCommand::Activate { program, dbc: dbc as u32 });
        match reply.status {
            ControlStatus::Ok => Ok(ActivationInfo::from_values(reply.values)),
            _ => Err(reply),
        }
    }

    /// Queues one raw request element on channel `dbc`, with the CRC the driver writes
    /// beside it. False if the ring is full.
    pub fn push(&mut self, dbc: usize, raw: &[u8; 64]) -> bool {
        let ix = SharedIndices::host_requests(&self.mem, &self.map, dbc);
        let producer = &mut self.requests[dbc];
        if producer.room(&ix, 1).unwrap_or(0) == 0 {
            return false;
        }
        let slot = producer.slot();
        self.mem.write(self.map.request_element(dbc, slot), raw).expect("rings are inside the region");
        let crc = aicsim_abi::dbc::element_crc(raw);
        self.mem.write(self.map.request_stamp(dbc, slot) + 12, &crc.to_le_bytes()).expect("inside the region");
        producer.push();
        producer.publish(&ix);
        true
    }

    /// Takes every response waiting on channel `dbc`.
    pub fn drain(&mut self, dbc: usize) -> Vec<ResponseElement> {
        self.drain_tagged(dbc).into_iter().map(|(_, r)| r).collect()
    }

    /// Takes every response waiting on channel `dbc` with its tag: how many elements
    /// the device had taken on the channel before the one it answers.
    pub fn drain_tagged(&mut self, dbc: usize) -> Vec<(u32, ResponseElement)> {
        let ix = SharedIndices::host_responses(&self.mem, &self.map, dbc);
        let consumer = &mut self.responses[dbc];
        let mut out = vec![];
        if consumer.refresh(&ix).is_err() {
            return out;
        }
        while consumer.pending() > 0 {
            let slot = consumer.slot();
            let mut raw = [0u8; 4];
            self.mem.read(self.map.response_element(dbc, slot), &mut raw).expect("rings are inside the region");
            let tag = self.mem.load_u32(self.map.response_tag(dbc, slot), Acquire);
            out.push((tag, bytemuck::pod_read_unaligned(&raw)));
            consumer.pop();
        }
        consumer.publish(&ix);
        out
    }

    /// Lets the device work until it makes no more progress; returns the elements it
    /// consumed.
    pub fn run(&mut self) -> u64 {
        let mut elements = 0;
        loop {
            let done = self.fw.service(&self.mem);
            elements += u64::from(done.elements);
            if !done.progressed() {
                return elements;
            }
        }
    }

    /// One inference of `image` activated as `info` on channel `dbc`, as the runtime
    /// queues it: one element per input binding (each bumping the input semaphore, the
    /// last ringing the doorbell), then one per output (each waiting on the output
    /// semaphore). Inputs are staged in host memory from `host_addr` on, outputs after
    /// them. Returns the outputs, or every response if any element failed or the
    /// device stopped before all of them were answered.
    pub fn infer(
        &mut self,
        dbc: usize,
        info: ActivationInfo,
        image: &ProgramImage,
        inputs: &[&[u8]],
        host_addr: u64,
    ) -> Result<Vec<Vec<u8>>, Vec<ResponseElement>> {
        let mut at = host_addr;
        for (b, data) in image.inputs().zip(inputs) {
            let len = data.len().min(b.size_bytes as usize);
            self.mem.write(at, &data[..len]).map_err(|_| Vec::new())?;
            at += len as u64;
        }
        let lens: Vec<u64> = inputs.iter().map(|d| d.len() as u64).collect();
        let (elements, outputs) = inference_elements(info, image, &lens, host_addr);
        let mut responses = Vec::new();
        for e in &elements {
            while !self.push(dbc, bytemuck::cast_ref(e)) {
                let before = responses.len();
                self.run();
                responses.extend(self.drain(dbc));
                if responses.len() == before {
                    return Err(responses);
                }
            }
        }
        self.run();
        responses.extend(self.drain(dbc));
        if responses.len() != elements.len() || responses.iter().any(|r| r.status != 0) {
            return Err(responses);
        }
        Ok(outputs
            .into_iter()
            .map(|(at, len)| {
                let mut out = vec![0u8; len];
                self.mem.read(at, &mut out).expect("staged inside host memory");
                out
            })
            .collect())
    }
}

/// The elements of one inference as the runtime queues them (see [`Rig::infer`]), with
/// inputs of `input_lens` bytes staged one after another from `host_addr`, and where in
/// host memory each output lands (address and bytes).
pub fn inference_elements(
    info: ActivationInfo,
    image: &ProgramImage,
    input_lens: &[u64],
    host_addr: u64,
) -> (Vec<RequestElement>, Vec<(u64, usize)>) {
    let mut elements = Vec::new();
    let mut at = host_addr;
    let n_in = image.inputs().count();
    for (i, (b, &len)) in image.inputs().zip(input_lens).enumerate() {
        let len = len.min(b.size_bytes) as usize;
        let mut e = element(elements.len(), Direction::ToDevice, at, info.ddr_base + b.ddr_offset, len);
        e.sem_cmd[0] = SemCommand::encode(SemCommand {
            op: SemOp::Inc,
            index: info.sem_inputs,
            value: 1,
            presync: false,
            inbound_fence: false,
            outbound_fence: false,
        });
        if i + 1 == n_in {
            e.db_addr = info.doorbell;
            e.db_attr = DoorbellAttr::encode(Some(DoorbellAttr { width: DoorbellWidth::Bits32 }));
            e.db_data = 1;
        }
        elements.push(e);
        at += len as u64;
    }
    let mut outputs = Vec::new();
    for b in image.outputs() {
        let len = b.size_bytes as usize;
        let mut e = element(elements.len(), Direction::FromDevice, info.ddr_base + b.ddr_offset, at, len);
        e.sem_cmd[0] = SemCommand::encode(SemCommand {
            op: SemOp::P,
            index: info.sem_outputs,
            value: 0,
            presync: true,
            inbound_fence: false,
            outbound_fence: false,
        });
        elements.push(e);
        outputs.push((at, len));
        at += b.size_bytes;
    }
    (elements, outputs)
}

/// A bulk element moving `len` bytes that asks for a completion.
fn element(req_id: usize, direction: Direction, src_addr: u64, dest_addr: u64, len: usize) -> RequestElement {
    RequestElement {
        req_id: req_id as u16,
        cmd: Cmd { direction, completion: true, bulk: true, force_msi: false }.encode(),
        src_addr,
        dest_addr,
        len: len as u32,
        ..Default::default()
    }
}

/// A 64-byte copy program active on one channel, to check that the device still serves
/// real work exactly whatever else was done to it.
pub struct Witness {
    pub dbc: usize,
    pub image: ProgramImage,
    pub info: ActivationInfo,
}

impl Witness {
    /// Loads the copy program (staged at [`Rig::staging`]) and activates it on `dbc`.
    pub fn activate(rig: &mut Rig, dbc: usize) -> Witness {
        let image = aicsim_abi::programs::copy_program("witness", IoDType::U8, &[64]);
        let program = rig.load(&image.to_bytes(), rig.staging()).expect("the copy program loads");
        let info = rig.activate(program, dbc).expect("a free channel activates");
        Witness { dbc, image, info }
    }

    /// One inference through the witness channel, staged in the second quarter of host
    /// memory: true if exactly its bytes came back.
    pub fn serves(&self, rig: &mut Rig, seed: u8) -> bool {
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(31) ^ seed).collect();
        let at = rig.map.host_offset() + rig.map.host_bytes / 4;
        matches!(rig.infer(self.dbc, self.info, &self.image, &[&data], at), Ok(out) if out == [data])
    }
}
