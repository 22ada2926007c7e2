//! The control mailbox: one request at a time (load or unload a program, activate or
//! deactivate a channel, report status), answered with a status, values and a message.

use super::*;

impl Firmware {
    pub(super) fn service_control<M: SharedMemory>(&mut self, mem: &M) -> bool {
        self.service_control_with(mem, |_| {})
    }

    /// Answers a pending control request, if any, and nothing else (the rings are left as
    /// they are); returns whether one was answered. `between` gets the fault plan's delay
    /// for the request (nanoseconds) after it is taken from the mailbox and before it runs
    /// (the device loop sleeps that long: a slow device).
    pub fn service_control_with<M: SharedMemory>(&mut self, mem: &M, between: impl FnOnce(u64)) -> bool {
        if self.hung {
            return false;
        }
        let Some((seq, req)) = aicsim_abi::control::take(mem) else {
            return false;
        };
        between(self.control_delay_ns());
        let (status, values, message) = match ControlCommand::decode(&req) {
            _ if req.seq != seq => (
                ControlStatus::InvalidArgument,
                [0; 7],
                format!("control request body carries sequence {} but the mailbox posted {seq}", req.seq),
            ),
            None => (
                ControlStatus::InvalidArgument,
                [0; 7],
                format!("unknown control opcode {} or argument out of range", req.opcode),
            ),
            Some(cmd) => match self.control(cmd, mem) {
                Ok(values) => (ControlStatus::Ok, values, String::new()),
                Err((status, message)) => (status, [0; 7], message),
            },
        };
        let message = mailbox_message(&message);
        let msg = message.as_bytes();
        let rsp = ControlResponse { status: status as u32, message_len: msg.len() as u32, values };
        aicsim_abi::control::answer(mem, seq, rsp, msg);
        aicsim_abi::control::publish_status(mem, self.status());
        true
    }

    pub(super) fn control<M: SharedMemory>(
        &mut self,
        cmd: ControlCommand,
        mem: &M,
    ) -> Result<ControlValues, (ControlStatus, String)> {
        match cmd {
            ControlCommand::LoadProgram { host_addr, len } => {
                self.load_program(host_addr, len, mem).map(|id| [id.into(), 0, 0, 0, 0, 0, 0])
            }
            ControlCommand::UnloadProgram { program } => {
                let slot = self.programs.get_mut(program as usize).filter(|p| p.is_some());
                let Some(slot) = slot else {
                    return Err((ControlStatus::NotFound, format!("no program {program} is loaded")));
                };
                if slot.as_ref().is_some_and(|p| p.activations > 0) {
                    return Err((ControlStatus::Busy, format!("program {program} still has active activations")));
                }
                *slot = None;
                Ok([0; 7])
            }
            ControlCommand::Activate { program, dbc } => {
                self.activate(program, dbc, mem).map(ActivationInfo::to_values)
            }
            ControlCommand::Deactivate { dbc } => self.deactivate(dbc, mem).map(|()| [0; 7]),
            ControlCommand::Status => Ok(self.status().to_values()),
            ControlCommand::Trace { dbc, on } => {
                match self.activations.get_mut(dbc as usize).and_then(Option::as_mut) {
                    Some(act) => {
                        act.trace = on;
                        Ok([0; 7])
                    }
                    None => Err((ControlStatus::NotFound, format!("channel {dbc} has no activation"))),
                }
            }
            ControlCommand::ReadProfile { dbc, seq, host_addr, len } => {
                let Some(act) = self.activations.get(dbc as usize).and_then(Option::as_ref) else {
                    return Err((ControlStatus::NotFound, format!("channel {dbc} has no activation")));
                };
                let Some((_, stats)) = act.profiles.iter().find(|(s, _)| *s == seq) else {
                    return Err((
                        ControlStatus::NotFound,
                        format!("run {seq} of channel {dbc} is not held (the device keeps the last {PROFILES_KEPT})"),
                    ));
                };
                let needed = aicsim_abi::profile::encoded_len(stats) as u64;
                if needed > len {
                    return Ok([needed, 0, 0, 0, 0, 0, 0]);
                }
                if !self.config.map.host_range_ok(host_addr, needed) {
                    return Err((
                        ControlStatus::InvalidArgument,
                        format!("profile buffer [{host_addr:#x}, +{needed:#x}) is outside host memory"),
                    ));
                }
                let _ = mem.write(host_addr, &aicsim_abi::profile::encode(seq, stats));
                Ok([needed, needed, 0, 0, 0, 0, 0])
            }
        }
    }

    /// A snapshot of resource use.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            nsp_total: self.config.num_nsp,
            nsp_free: self.core_owner.iter().filter(|o| o.is_none()).count() as u32,
            ddr_total: self.ddr.total_bytes(),
            ddr_free: self.ddr.free_bytes(),
            fw_version: FIRMWARE_VERSION,
            programs_loaded: self.programs.iter().filter(|p| p.is_some()).count() as u32,
            active_channels: (0..NUM_DBC).filter(|&d| self.activations[d].is_some()).fold(0, |m, d| m | 1 << d),
        }
    }
}

/// The message as the mailbox holds it: whole characters, at most
/// [`layout::CTRL_MESSAGE_BYTES`] bytes of UTF-8 (a longer one is cut at a character).
pub(super) fn mailbox_message(message: &str) -> heapless::String<{ layout::CTRL_MESSAGE_BYTES as usize }> {
    let mut out = heapless::String::new();
    for c in message.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
