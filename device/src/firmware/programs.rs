//! Programs and device DDR: loading a program container, activating it on a channel
//! (cores, semaphores, DDR for its buffers and constants), starting a run once its
//! inputs have landed, and finishing runs (run records, statistics, output semaphores).

use super::*;
use crate::scheduler::ExecFault;

impl Firmware {
    /// Runs the scheduler to the next program completion (not past `limit`) and
    /// releases the outputs of what finished.
    pub(super) fn finish_programs<M: SharedMemory>(&mut self, mem: &M, limit: u64) -> u32 {
        let finished = self.scheduler.run_until(&mut self.cores, self.config.vtcm_bytes, mem, self.config.mode, limit);
        let mut count = 0;
        for (job, result) in finished {
            let fault = match result {
                Err(ExecFault::Instruction { stream, index, .. }) => Some((stream, index)),
                _ => None,
            };
            let Some(dbc) =
                (0..NUM_DBC).find(|&d| self.activations[d].as_ref().is_some_and(|a| a.running == Some(job)))
            else {
                continue;
            };
            let outputs = self.activations[dbc]
                .as_ref()
                .and_then(|a| self.programs.get(a.program)?.as_ref()?.entries.get(usize::from(a.running_entry)))
                .map_or(0, |e| e.outputs);
            let now = self.scheduler.now();
            if let Some(act) = &mut self.activations[dbc] {
                act.running = None;
                act.runs += 1;
                let status = match result {
                    Ok(stats) => {
                        self.device_cycles += stats.cycles();
                        if act.profiles.is_full() {
                            act.profiles.pop_front();
                        }
                        // Room was made above.
                        let _ = act.profiles.push_back((act.runs, stats));
                        0
                    }
                    Err(_) => {
                        act.faulted_outputs += u32::from(outputs);
                        CompletionCode::ProgramFault as u32
                    }
                };
                let record = RunRecord {
                    seq: act.runs,
                    idle_since_cycle: act.idle_since,
                    ready_cycle: act.current.0,
                    start_cycle: act.current.1,
                    end_cycle: now,
                    status,
                    fault_core: fault.map_or(0, |(stream, _)| stream + 1),
                    fault_instruction: fault
                        .map_or(0, |(_, index)| u64::from(act.running_entry) << 32 | (index as u64 & 0xffff_ffff)),
                    ..RunRecord::default()
                };
                let _ = mem.write(self.config.map.run_record(dbc, act.runs), bytemuck::bytes_of(&record));
                if outputs > 0 {
                    act.released.push_back((act.runs, outputs));
                }
                act.idle_since = now;
                let sem_out = self.config.map.semaphore(act.info.sem_outputs);
                let out = (mem.load_u32(sem_out, Acquire) as u16).wrapping_add(outputs) & SEM_VALUE_MAX;
                mem.store_u32(sem_out, out.into(), Release);
            }
            self.start_ready_program(dbc, mem);
            count += 1;
        }
        count
    }

    /// Starts the channel's program if a doorbell is pending, all its inputs have
    /// landed, and the previous run has finished.
    pub(super) fn start_ready_program<M: SharedMemory>(&mut self, dbc: usize, mem: &M) {
        let Some(act) = &self.activations[dbc] else { return };
        let Some(program) = self.programs.get(act.program).and_then(Option::as_ref) else { return };
        let Some(&entry) = act.pending.front() else { return };
        if act.running.is_some() {
            return;
        }
        // The doorbell was checked against the program's entries when it rang.
        let Some(plan) = program.entries.get(usize::from(entry)) else { return };
        let sem_in = self.config.map.semaphore(act.info.sem_inputs);
        let landed = (mem.load_u32(sem_in, Acquire) as u16) & SEM_VALUE_MAX;
        if landed < plan.inputs {
            return;
        }
        mem.store_u32(sem_in, u32::from(landed - plan.inputs), Release);
        let ddr_base = self.config.map.ddr_offset() + act.info.ddr_base;
        let now = self.scheduler.now();
        let jitter = self.config.cost.dispatch_jitter_cycles;
        let at = now + if jitter == 0 { 0 } else { splitmix(&mut self.model_rng) % (jitter + 1) };
        let job = self.scheduler.start_at(plan.plan.clone(), &act.cores, ddr_base, act.trace, at);
        if let Some(act) = &mut self.activations[dbc] {
            act.pending.pop_front();
            act.running = Some(job);
            act.running_entry = entry;
            // Inputs that landed while the previous run still ran were ready at its end.
            act.current = (act.ready_at.max(act.idle_since).min(now), at);
        }
    }

    pub(super) fn load_program<M: SharedMemory>(
        &mut self,
        host_addr: u64,
        len: u64,
        mem: &M,
    ) -> Result<u32, (ControlStatus, String)> {
        if !self.config.map.host_range_ok(host_addr, len) {
            return Err((
                ControlStatus::InvalidArgument,
                format!("program image [{host_addr:#x}, +{len:#x}) is outside host memory"),
            ));
        }
        let mut bytes = alloc::vec![0u8; len as usize];
        mem.read(host_addr, &mut bytes).map_err(|e| (ControlStatus::InvalidArgument, format!("{e}")))?;
        let image =
            ProgramImage::parse(&bytes).map_err(|e| (ControlStatus::Rejected, format!("program container: {e}")))?;
        if image.num_cores() > self.config.num_nsp {
            return Err((
                ControlStatus::Rejected,
                format!("program needs {} cores but the device has {}", image.num_cores(), self.config.num_nsp),
            ));
        }
        if image.vtcm_bytes > self.config.vtcm_bytes {
            return Err((
                ControlStatus::Rejected,
                format!(
                    "program needs {} bytes of VTCM per core but a core has {}",
                    image.vtcm_bytes, self.config.vtcm_bytes
                ),
            ));
        }
        if image.ddr_bytes > self.config.map.ddr_bytes {
            return Err((
                ControlStatus::Rejected,
                format!(
                    "program needs {} bytes of DDR but the device has {}",
                    image.ddr_bytes, self.config.map.ddr_bytes
                ),
            ));
        }
        let limits = Limits { vtcm_bytes: image.vtcm_bytes, ddr_bytes: image.ddr_bytes, cores: image.num_cores() };
        let count = |n: usize, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|&n| n <= SEM_VALUE_MAX)
                .ok_or((ControlStatus::Rejected, format!("program has too many {what}")))
        };
        let mut entries = Vec::with_capacity(image.entry_count());
        for entry in 0..image.entry_count() {
            let mut streams = Vec::with_capacity(image.cores.len());
            for core in 0..image.cores.len() {
                let ops = nsp::validate_stream(core as u32, image.entry_stream(entry, core), &limits).map_err(|e| {
                    let within = if image.entries.is_empty() {
                        String::new()
                    } else {
                        format!(" entry '{}'", image.entry_name(entry))
                    };
                    (ControlStatus::Rejected, format!("program '{}'{within}: {e}", image.name))
                })?;
                streams.push(ops);
            }
            entries.push(EntryPlan {
                plan: Arc::new(Plan::new(streams, &self.config.cost)),
                inputs: count(image.entry_inputs(entry).count(), "inputs")?,
                outputs: count(image.entry_outputs(entry).count(), "outputs")?,
            });
        }
        let program = Program { image, entries, activations: 0 };
        let id = match self.programs.iter().position(Option::is_none) {
            Some(i) => {
                self.programs[i] = Some(program);
                i
            }
            None => {
                self.programs.push(Some(program));
                self.programs.len() - 1
            }
        };
        Ok(id as u32)
    }

    pub(super) fn activate<M: SharedMemory>(
        &mut self,
        program: u32,
        dbc: u32,
        mem: &M,
    ) -> Result<ActivationInfo, (ControlStatus, String)> {
        let dbc = dbc as usize;
        if dbc >= NUM_DBC {
            return Err((
                ControlStatus::InvalidArgument,
                format!("channel {dbc} out of range (the device has {NUM_DBC})"),
            ));
        }
        if self.activations[dbc].is_some() {
            return Err((ControlStatus::ChannelInUse, format!("channel {dbc} already has an activation")));
        }
        let Some(prog) = self.programs.get(program as usize).and_then(Option::as_ref) else {
            return Err((ControlStatus::NotFound, format!("no program {program} is loaded")));
        };
        let need_cores = prog.image.num_cores() as usize;
        let free_cores: heapless::Vec<u32, MAX_NSP> =
            (0..self.config.num_nsp).filter(|&c| self.core_owner[c as usize].is_none()).collect();
        if free_cores.len() < need_cores {
            return Err((
                ControlStatus::NoResources,
                format!("program needs {need_cores} cores, {} of {} are free", free_cores.len(), self.config.num_nsp),
            ));
        }
        let free_sems: heapless::Vec<u8, 2> =
            (0..NUM_SEMAPHORES).filter(|&s| self.sem_owner[s as usize].is_none()).take(2).collect();
        if free_sems.len() < 2 {
            return Err((
                ControlStatus::NoResources,
                String::from("no free semaphores (each activation needs 2 of the 32)"),
            ));
        }
        let ddr_bytes = prog.image.ddr_bytes.max(1);
        let Some(ddr_base) = self.ddr.alloc(ddr_bytes) else {
            return Err((
                ControlStatus::NoResources,
                format!("no {ddr_bytes}-byte DDR extent free ({} bytes free in all)", self.ddr.free_bytes()),
            ));
        };
        let ddr_region = self.config.map.ddr_offset() + ddr_base;
        // A timing run reads nothing inside the device: its constants need not be there.
        let constants = if self.config.mode == ExecMode::Functional { &prog.image.constants[..] } else { &[] };
        for blob in constants {
            if mem.write(ddr_region + blob.ddr_offset, &blob.data).is_err() {
                self.release_ddr(ddr_base, ddr_bytes, mem);
                return Err((ControlStatus::NoResources, String::from("constants do not fit in the shared region")));
            }
        }
        let cores = heapless::Vec::from_slice(&free_cores[..need_cores]).expect("fewer than the free cores");
        let mut core_mask = 0u64;
        for &c in &cores {
            self.core_owner[c as usize] = Some(dbc);
            core_mask |= 1 << c;
        }
        for &s in &free_sems {
            self.sem_owner[s as usize] = Some(dbc);
            mem.store_u32(self.config.map.semaphore(s), 0, Release);
        }
        let info = ActivationInfo {
            ddr_base,
            ddr_bytes,
            doorbell: self.config.map.doorbell(dbc),
            sem_inputs: free_sems[0],
            sem_outputs: free_sems[1],
            core_mask,
        };
        if let Some(Some(p)) = self.programs.get_mut(program as usize) {
            p.activations += 1;
        }
        self.activations[dbc] = Some(Activation {
            program: program as usize,
            info,
            cores,
            pending: alloc::collections::VecDeque::new(),
            running: None,
            running_entry: 0,
            released: alloc::collections::VecDeque::new(),
            faulted_outputs: 0,
            runs: 0,
            profiles: Box::new(heapless::Deque::new()),
            trace: false,
            idle_since: self.scheduler.now(),
            ready_at: 0,
            current: (0, 0),
        });
        for seq in 1..=aicsim_abi::run_record::RUN_RECORDS {
            let _ = mem.write(self.config.map.run_record(dbc, seq), bytemuck::bytes_of(&RunRecord::default()));
        }
        self.reset_timed_channel(dbc, mem);
        let map = self.config.map;
        self.channels[dbc].reset(self.ring, &map, dbc, mem);
        Ok(info)
    }

    pub(super) fn deactivate<M: SharedMemory>(&mut self, dbc: u32, mem: &M) -> Result<(), (ControlStatus, String)> {
        let dbc = dbc as usize;
        let Some(act) = self.activations.get_mut(dbc).and_then(Option::take) else {
            return Err((ControlStatus::NotFound, format!("channel {dbc} has no activation")));
        };
        if let Some(job) = act.running {
            self.scheduler.cancel(job);
        }
        for owner in self.core_owner.iter_mut().chain(self.sem_owner.iter_mut()) {
            if *owner == Some(dbc) {
                *owner = None;
            }
        }
        self.release_ddr(act.info.ddr_base, act.info.ddr_bytes, mem);
        if let Some(Some(p)) = self.programs.get_mut(act.program) {
            p.activations -= 1;
        }
        self.channels[dbc] = Channel::new(self.ring);
        Ok(())
    }

    /// Gives an activation's DDR back, scrubbed: the next activation to get it reads
    /// zeros, never the last one's weights or activations.
    fn release_ddr<M: SharedMemory>(&mut self, base: u64, bytes: u64, mem: &M) {
        let rounded = self.ddr.rounded(bytes).unwrap_or(bytes);
        let _ = mem.discard(self.config.map.ddr_offset() + base, rounded);
        self.ddr.release(base, bytes);
    }
}
