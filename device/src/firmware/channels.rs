//! The channels and their rings: each request element copied out of the ring and
//! validated, its presync semaphore, DMA, postsync semaphores and doorbell run, its
//! response posted, and the ring indices published through the `aicsim_abi::ring`
//! endpoints.

use super::faults::raise_msi;
use super::*;
use aicsim_abi::iommu;

/// Offset of the CRC in a request stamp.
const CRC_FIELD: u64 = 12;

/// What the device writes into `reserved0` of its own copy of an element whose CRC did
/// not match (a host-sent element with reserved bits set is refused either way).
const CORRUPT_COPY: u32 = u32::MAX;

impl Firmware {
    pub(super) fn service_channel<M: SharedMemory>(&mut self, dbc: usize, mem: &M) -> u32 {
        let timed = self.config.pacing == Pacing::Simulated;
        let map = self.config.map;
        let (req_ix, rsp_ix) =
            (SharedIndices::device_requests(mem, &map, dbc), SharedIndices::device_responses(mem, &map, dbc));
        let mut ch = self.channels[dbc];
        // A garbage index (or a link reading all-ones): touch nothing until it is sane.
        if ch.requests.refresh(&req_ix).is_err() || ch.responses.refresh(&rsp_ix).is_err() {
            return 0;
        }
        let tail = ch.requests.observed_tail();
        if timed {
            self.timed_new_elements(dbc, tail, mem);
        }
        let mut consumed = 0;
        let mut responses = 0;
        let mut force_msi = false;
        while ch.requests.pending() > 0 && consumed < CHANNEL_BATCH {
            // Room for this element's response, else it waits for the host to drain.
            if !matches!(ch.responses.room(&rsp_ix, 1), Ok(1..)) {
                break;
            }
            let req_head = ch.requests.slot();
            let (element, resume) = match ch.stage {
                // On the simulated clock, the head element is served only once its time
                // (and its transfer over the host link) has come.
                Stage::Fresh if timed => match self.timed_head(dbc, req_head, tail, mem) {
                    Some(element) => (element, None),
                    None => break,
                },
                Stage::Fresh => match self.read_element(dbc, req_head, mem) {
                    Some(element) => (element, None),
                    None => break,
                },
                Stage::PostSync { element, next } => (element, Some(next)),
            };
            let step = self.run_element(dbc, &element, resume, mem);
            if let Some(ticket) = self.prestarted.take() {
                // The element did not take its bytes (it failed): they still land.
                mem.copy_finish(ticket);
            }
            match step {
                ElementOutcome::Blocked(stage) => {
                    ch.stage = stage;
                    break;
                }
                ElementOutcome::Done { status, respond, force_msi: force } => {
                    self.count_served_element();
                    if respond {
                        let status = self.inject_completion_error(status);
                        let rsp = ResponseElement { req_id: element.req_id, status };
                        let slot = ch.responses.slot();
                        // The slot is ours: the ring has room, checked above.
                        let _ = mem.write(map.response_element(dbc, slot), bytemuck::bytes_of(&rsp));
                        let _ = mem.write(map.response_tag(dbc, slot), &ch.taken.to_le_bytes());
                        if timed {
                            self.timed_responded(dbc, slot, mem);
                        }
                        ch.responses.push();
                        responses += 1;
                        force_msi |= force;
                    }
                    if timed {
                        self.timed_consumed(dbc);
                    }
                    ch.stage = Stage::Fresh;
                    ch.requests.pop();
                    ch.taken = ch.taken.wrapping_add(1);
                    consumed += 1;
                }
            }
        }
        if consumed > 0 {
            // The slots we consumed may be reused by the host from now on.
            ch.requests.publish(&req_ix);
        }
        if responses > 0 {
            // Either the host sees these responses when it re-checks after publishing its
            // head, or the device sees it had drained everything and interrupts it.
            let host_idle = ch.responses.publish_and_check_idle(&rsp_ix);
            if timed {
                self.timed_publish_wakes(dbc, mem);
            }
            // Drawn on every pass that posts responses, wanted or not: the fault stream
            // does not depend on the host's timing.
            let lost = self.interrupt_lost();
            if host_idle || force_msi {
                if lost {
                    mem.fetch_add_u32(layout::MSI_LOST, 1, Release);
                } else {
                    raise_msi(dbc, mem);
                }
            }
        }
        self.channels[dbc] = ch;
        consumed
    }

    /// Copies request element `index` of channel `dbc` out of the ring (a corrupted
    /// element fault flips one bit of the copy) and checks the copy against the CRC the
    /// host wrote beside it: a copy that does not match is marked
    /// ([`CORRUPT_COPY`] in `reserved0`) and is served as a
    /// [`CompletionCode::CorruptElement`], moving nothing. `None` if the ring is out of
    /// reach.
    pub(super) fn read_element<M: SharedMemory>(&mut self, dbc: usize, index: u32, mem: &M) -> Option<RequestElement> {
        let map = self.config.map;
        let mut raw = [0u8; REQUEST_ELEMENT_BYTES as usize];
        mem.read(map.request_element(dbc, index), &mut raw).ok()?;
        let mut crc = [0u8; 4];
        mem.read(map.request_stamp(dbc, index) + CRC_FIELD, &mut crc).ok()?;
        self.corrupt_element(&mut raw);
        let mut element = bytemuck::pod_read_unaligned::<RequestElement>(&raw);
        if aicsim_abi::dbc::element_crc(&raw) != u32::from_le_bytes(crc) {
            element.reserved0 = CORRUPT_COPY;
        }
        Some(element)
    }

    pub(super) fn check_element<M: SharedMemory>(
        &self,
        dbc: usize,
        e: &RequestElement,
        mem: &M,
    ) -> Result<Checked, CompletionCode> {
        if e.reserved0 == CORRUPT_COPY {
            return Err(CompletionCode::CorruptElement);
        }
        if e.reserved0 != 0 || e.reserved1 != 0 || e.reserved2 != 0 || e.reserved3 != 0 {
            return Err(CompletionCode::ReservedBits);
        }
        let cmd = Cmd::decode(e.cmd)?;
        let mut presync = None;
        let mut postsync = [None; 4];
        for (slot, &raw) in postsync.iter_mut().zip(&e.sem_cmd) {
            let Some(sem) = SemCommand::decode(raw)? else { continue };
            if self.sem_owner[sem.index as usize] != Some(dbc) {
                return Err(CompletionCode::BadSemaphore);
            }
            if sem.presync {
                if presync.replace(sem).is_some() {
                    return Err(CompletionCode::MultiplePresync);
                }
            } else {
                *slot = Some(sem);
            }
        }
        let doorbell = DoorbellAttr::decode(e.db_attr)?;
        if let Some(db) = doorbell {
            let width = db.width.bytes();
            let aligned = e.db_addr.is_multiple_of(width);
            let to_own_doorbell = self.config.map.doorbell_channel(e.db_addr) == Some(dbc);
            if !aligned || !(to_own_doorbell || self.device_range_ok(dbc, e.db_addr, width)) {
                return Err(CompletionCode::BadDoorbell);
            }
            // An activation's doorbell takes 1 + the entry of its program to run.
            let entries = self.activations[dbc]
                .as_ref()
                .and_then(|a| self.programs.get(a.program)?.as_ref())
                .map_or(1, |p| p.entries.len());
            if to_own_doorbell && !(1..=entries as u64).contains(&u64::from(e.db_data)) {
                return Err(CompletionCode::BadDoorbell);
            }
        }
        let len = u64::from(e.len);
        match cmd.direction {
            Direction::None if e.len != 0 => return Err(CompletionCode::BadLength),
            Direction::None => {}
            _ if e.len == 0 => return Err(CompletionCode::BadLength),
            Direction::ToDevice => {
                if !self.config.map.host_range_ok(e.src_addr, len) {
                    return Err(CompletionCode::HostAddressOutOfRange);
                }
                if !iommu::allows(mem, &self.config.map, dbc, e.src_addr, len) {
                    return Err(CompletionCode::HostAddressNotMapped);
                }
                if !self.device_range_ok(dbc, e.dest_addr, len) {
                    return Err(CompletionCode::DeviceAddressOutOfRange);
                }
            }
            Direction::FromDevice => {
                if !self.device_range_ok(dbc, e.src_addr, len) {
                    return Err(CompletionCode::DeviceAddressOutOfRange);
                }
                if !self.config.map.host_range_ok(e.dest_addr, len) {
                    return Err(CompletionCode::HostAddressOutOfRange);
                }
                if !iommu::allows(mem, &self.config.map, dbc, e.dest_addr, len) {
                    return Err(CompletionCode::HostAddressNotMapped);
                }
            }
        }
        Ok(Checked { cmd, presync, postsync, doorbell })
    }

    /// Whether `[addr, addr + len)` is inside the DDR of the channel's activation.
    pub(super) fn device_range_ok(&self, dbc: usize, addr: u64, len: u64) -> bool {
        let Some(act) = &self.activations[dbc] else { return false };
        let (base, size) = (act.info.ddr_base, act.info.ddr_bytes);
        addr >= base && addr.checked_add(len).is_some_and(|end| end <= base + size)
    }

    pub(super) fn run_element<M: SharedMemory>(
        &mut self,
        dbc: usize,
        e: &RequestElement,
        resume: Option<usize>,
        mem: &M,
    ) -> ElementOutcome {
        let checked = match self.check_element(dbc, e, mem) {
            Ok(c) => c,
            Err(code) => {
                let counter = match code {
                    CompletionCode::HostAddressNotMapped => Some(layout::IOMMU_FAULTS),
                    CompletionCode::CorruptElement => Some(layout::CORRUPT_ELEMENTS),
                    _ => None,
                };
                if let Some(at) = counter {
                    mem.fetch_add_u32(at, 1, Release);
                }
                return ElementOutcome::Done { status: code as u16, respond: true, force_msi: false };
            }
        };
        let mut status = 0;
        let first_post = match resume {
            Some(next) => next,
            None => {
                if let Some(pre) = checked.presync {
                    if !self.apply_sem(pre, mem) {
                        return ElementOutcome::Blocked(Stage::Fresh);
                    }
                    let now = self.scheduler.now();
                    if let Some(act) = &mut self.activations[dbc] {
                        if pre.op == SemOp::P && pre.index == act.info.sem_outputs {
                            // An output released by a faulted run carries the fault.
                            if act.faulted_outputs > 0 {
                                act.faulted_outputs -= 1;
                                status = CompletionCode::ProgramFault as u16;
                            }
                            if let Some((run, left)) = act.released.front_mut() {
                                *left -= 1;
                                if *left == 0 {
                                    let at = self.config.map.run_record(dbc, *run) + OUTPUTS_TAKEN_FIELD;
                                    let _ = mem.write(at, &now.to_le_bytes());
                                    act.released.pop_front();
                                }
                            }
                        }
                    }
                }
                let map = self.config.map;
                let len = u64::from(e.len);
                let moved = match checked.cmd.direction {
                    Direction::None => Ok(()),
                    // Already on its way (simulated clock): it lands now.
                    Direction::ToDevice | Direction::FromDevice if self.prestarted.is_some() => {
                        mem.copy_finish(self.prestarted.take().unwrap_or(CopyTicket::DONE));
                        Ok(())
                    }
                    Direction::ToDevice => mem.copy(e.src_addr, map.ddr_offset() + e.dest_addr, len),
                    Direction::FromDevice => mem.copy(map.ddr_offset() + e.src_addr, e.dest_addr, len),
                };
                if moved.is_err() {
                    return ElementOutcome::Done {
                        status: CompletionCode::DeviceAddressOutOfRange as u16,
                        respond: true,
                        force_msi: false,
                    };
                }
                0
            }
        };
        for (i, sem) in checked.postsync.iter().enumerate().skip(first_post) {
            let Some(sem) = *sem else { continue };
            if !self.apply_sem(sem, mem) {
                return ElementOutcome::Blocked(Stage::PostSync { element: *e, next: i });
            }
        }
        if let Some(db) = checked.doorbell {
            if self.config.map.doorbell_channel(e.db_addr) == Some(dbc) {
                let now = self.scheduler.now();
                if let Some(act) = &mut self.activations[dbc] {
                    // Checked when the element was: the data names an entry.
                    act.pending.push_back((e.db_data - 1) as u8);
                    act.ready_at = now;
                }
            } else {
                let bytes = e.db_data.to_le_bytes();
                let width = db.width.bytes() as usize;
                let _ = mem.write(self.config.map.ddr_offset() + e.db_addr, &bytes[..width]);
            }
        }
        self.start_ready_program(dbc, mem);
        ElementOutcome::Done {
            status,
            respond: checked.cmd.completion || status != 0,
            force_msi: checked.cmd.force_msi,
        }
    }

    /// Whether a semaphore command would go ahead now (without applying it).
    pub(super) fn sem_would_pass<M: SharedMemory>(&self, sem: SemCommand, mem: &M) -> bool {
        let current = (mem.load_u32(self.config.map.semaphore(sem.index), Acquire) as u16) & SEM_VALUE_MAX;
        !matches!(semaphore::apply(sem.op, sem.value, current), SemOutcome::Blocked)
    }

    /// Applies one semaphore command; false if it is a wait that is not satisfied.
    pub(super) fn apply_sem<M: SharedMemory>(&self, sem: SemCommand, mem: &M) -> bool {
        let at = self.config.map.semaphore(sem.index);
        let current = (mem.load_u32(at, Acquire) as u16) & SEM_VALUE_MAX;
        match semaphore::apply(sem.op, sem.value, current) {
            SemOutcome::Blocked => false,
            SemOutcome::Proceed(v) => {
                if v != current || sem.op == SemOp::Init {
                    mem.store_u32(at, v.into(), Release);
                }
                true
            }
        }
    }
}
