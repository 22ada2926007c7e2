//! The host's side of the control mailbox (see [`aicsim_abi::control`]): one command at
//! a time, a timeout that grows with what is being loaded, and the settling of commands
//! whose caller gave up — so a late device never runs a withdrawn command, never runs one
//! twice, and never leaves behind a program or an activation that nobody holds.

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::{Duration, Instant};

use aicsim_abi::control::RESPONSE_HEADER_BYTES;
use aicsim_abi::control::{self, ControlCommand, ControlResponse, ControlStatus, ControlValues, Phase};
use aicsim_abi::layout;
use aicsim_abi::memory::SharedMemory;

use crate::error::{fail, Errno, KmdError, Result};
use crate::Shared;

/// Bytes of program container per second the control timeout allows for on top of its
/// base: the device validates the container and copies its constants to DDR, which a
/// loaded host may run at a small fraction of memory speed.
pub const LOAD_ALLOWANCE_BYTES_PER_SEC: u64 = 64 << 20;

/// What the host keeps about the mailbox between commands (behind the control lock).
#[derive(Debug, Default)]
pub(crate) struct ControlHost {
    /// A command the device took but had not answered when its caller gave up: its
    /// sequence number and the command. It is settled before anything else is posted.
    owed: Option<(u32, ControlCommand)>,
}

/// How waiting for an answer ended.
enum Outcome {
    Answered,
    /// The device restarted and dropped the command: the mailbox is free, unanswered.
    Dropped,
}

impl Shared {
    /// The time `cmd` may take: the configured base, plus the load allowance for a
    /// program of `len` bytes.
    pub fn control_timeout(&self, cmd: &ControlCommand) -> Duration {
        let base = Duration::from_nanos(self.control_timeout_ns.load(Acquire));
        match *cmd {
            ControlCommand::LoadProgram { len, .. } => {
                base + Duration::from_secs_f64(len as f64 / LOAD_ALLOWANCE_BYTES_PER_SEC as f64)
            }
            _ => base,
        }
    }

    /// Sends one control message and waits for the answer. Before it, settles what an
    /// earlier caller left behind: a command the device took after its caller timed out
    /// (a late load is unloaded, a late activation deactivated) and channels whose
    /// deactivation the device has not confirmed.
    pub fn control(&self, cmd: ControlCommand) -> Result<ControlValues> {
        self.control_checked(cmd, || Ok(()))
    }

    /// [`Shared::control`], with `check` run once no other command can come between it
    /// and this one (a channel cannot change hands meanwhile: every such change is a
    /// control command or holds the control lock).
    pub fn control_checked(&self, cmd: ControlCommand, check: impl FnOnce() -> Result<()>) -> Result<ControlValues> {
        let mut host = self.control.lock();
        if !self.online() {
            return fail(Errno::ENODEV, "device is offline");
        }
        self.settle(&mut host)?;
        check()?;
        self.exchange(&mut host, cmd)
    }

    /// Posts `cmd`, waits for its answer, and withdraws it if none comes in time.
    fn exchange(&self, host: &mut ControlHost, cmd: ControlCommand) -> Result<ControlValues> {
        let seq = match control::post(&self.region, cmd.encode()) {
            Ok(seq) => seq,
            Err(state) => {
                return fail(
                    Errno::EBUSY,
                    format!("the control mailbox is held by request {} ({:?})", state.seq, state.phase),
                )
            }
        };
        self.ring_device();
        let timeout = self.control_timeout(&cmd);
        match self.await_answer(seq, timeout) {
            Ok(Outcome::Answered) => self.read_answer(),
            Ok(Outcome::Dropped) => fail(Errno::ENODEV, format!("the device restarted while running {cmd:?}")),
            Err(e) if e.errno == Errno::ETIMEDOUT => match control::cancel(&self.region, seq) {
                Ok(()) => fail(
                    Errno::ETIMEDOUT,
                    format!("device did not take {cmd:?} within {timeout:?}; withdrawn, it will not run"),
                ),
                Err(_) if control::answered(&self.region, seq) => self.read_answer(),
                Err(_) => {
                    host.owed = Some((seq, cmd));
                    let then = match cmd {
                        ControlCommand::LoadProgram { .. } | ControlCommand::Activate { .. } => {
                            "if it still succeeds, the driver undoes it"
                        }
                        _ => "the driver takes its answer into account when it comes",
                    };
                    fail(Errno::ETIMEDOUT, format!("device took {cmd:?} but did not answer within {timeout:?}; {then}"))
                }
            },
            Err(e) => Err(e),
        }
    }

    /// Waits (at most `timeout`) for the answer to request `seq`; steps a manual device.
    fn await_answer(&self, seq: u32, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        loop {
            let answered = self.region.load_u32(layout::CTRL_RSP_SEQ, Acquire);
            if answered == seq {
                return Ok(Outcome::Answered);
            }
            let state = control::mailbox_state(&self.region);
            if state.seq == seq && state.phase == Phase::Free {
                // The device stores the answer's number before it frees the mailbox:
                // look again, now that the free state has been seen.
                if control::answered(&self.region, seq) {
                    return Ok(Outcome::Answered);
                }
                return Ok(Outcome::Dropped);
            }
            if !self.online() {
                return fail(Errno::ENODEV, "device went offline during a control request");
            }
            if let Some(fw) = self.manual_firmware.lock().as_mut() {
                fw.service(&self.region);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return fail(Errno::ETIMEDOUT, format!("no answer to control request {seq} within {timeout:?}"));
            }
            self.region.wait(layout::CTRL_RSP_SEQ, answered, (deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// The answer in the mailbox, as values or the errno its status maps to.
    fn read_answer(&self) -> Result<ControlValues> {
        let mut raw = [0u8; RESPONSE_HEADER_BYTES as usize];
        self.region.read(layout::CTRL_RESPONSE_OFFSET, &mut raw).expect("mailbox inside the region");
        let rsp: ControlResponse = bytemuck::pod_read_unaligned(&raw);
        let len = (rsp.message_len as u64).min(layout::CTRL_MESSAGE_BYTES) as usize;
        let mut msg = vec![0u8; len];
        self.region
            .read(layout::CTRL_RESPONSE_OFFSET + RESPONSE_HEADER_BYTES, &mut msg)
            .expect("mailbox inside the region");
        let msg = String::from_utf8_lossy(&msg).into_owned();
        let errno = match ControlStatus::from_raw(rsp.status) {
            Some(ControlStatus::Ok) => return Ok(rsp.values),
            Some(ControlStatus::InvalidArgument) | Some(ControlStatus::Rejected) => Errno::EINVAL,
            Some(ControlStatus::NotFound) => Errno::ENOENT,
            Some(ControlStatus::NoResources) => Errno::ENOSPC,
            Some(ControlStatus::Busy) => Errno::EBUSY,
            Some(ControlStatus::ChannelInUse) => {
                return Err(KmdError { channel_in_use: true, ..KmdError::new(Errno::EBUSY, msg) })
            }
            None => Errno::EINVAL,
        };
        fail(errno, msg)
    }

    /// Settles a command owed from a timed-out call, then the channels whose
    /// deactivation is unconfirmed. EBUSY while the device is still on the owed command.
    pub(crate) fn settle(&self, host: &mut ControlHost) -> Result<()> {
        // Each pass settles one owed command; undoing it may owe another (an unload that
        // times out), which the next pass waits for.
        while let Some((seq, cmd)) = host.owed {
            match self.await_answer(seq, self.control_timeout(&cmd)) {
                Ok(Outcome::Answered) => {
                    host.owed = None;
                    let answer = self.read_answer();
                    let undo = match (cmd, &answer) {
                        (ControlCommand::LoadProgram { .. }, Ok(v)) => {
                            Some(ControlCommand::UnloadProgram { program: v[0] as u32 })
                        }
                        (ControlCommand::Activate { dbc, .. }, Ok(_)) => Some(ControlCommand::Deactivate { dbc }),
                        _ => None,
                    };
                    // A late unload took effect: the driver's table follows the device's.
                    if let (ControlCommand::UnloadProgram { program }, Ok(_)) = (cmd, &answer) {
                        self.programs.lock().retain(|_, p| p.device_id != program);
                    }
                    // A late deactivation is the confirmation a retiring channel waits for.
                    if let ControlCommand::Deactivate { dbc } = cmd {
                        if answer.is_ok() || answer.is_err_and(|e| e.errno == Errno::ENOENT) {
                            self.confirm_retired(dbc as usize);
                        }
                    }
                    if let Some(undo) = undo {
                        let _ = self.exchange(host, undo);
                    }
                }
                Ok(Outcome::Dropped) => host.owed = None,
                Err(e) if e.errno == Errno::ETIMEDOUT => {
                    return fail(
                        Errno::EBUSY,
                        format!("the device is still running an earlier {cmd:?} whose caller timed out"),
                    )
                }
                Err(e) => return Err(e),
            }
        }
        let mut unconfirmed = 0;
        for (dbc, channel) in self.channels.iter().enumerate() {
            if !channel.state.lock().retiring {
                continue;
            }
            match self.exchange(host, ControlCommand::Deactivate { dbc: dbc as u32 }) {
                Ok(_) => self.confirm_retired(dbc),
                Err(e) if e.errno == Errno::ENOENT => self.confirm_retired(dbc),
                // Taken but unanswered: the mailbox is the device's until it answers.
                Err(e) if host.owed.is_some() => {
                    return Err(KmdError::new(
                        e.errno,
                        format!("the device has not confirmed channel {dbc}'s deactivation: {}", e.detail),
                    ))
                }
                // Withdrawn or refused: the channel stays reserved; try again next time.
                Err(_) => unconfirmed += 1,
            }
        }
        if unconfirmed > 0 {
            return Ok(());
        }
        // Nothing is left on the rings from before: the datapath may move again.
        self.control_only.store(false, SeqCst);
        Ok(())
    }

    fn confirm_retired(&self, dbc: usize) {
        if let Some(channel) = self.channels.get(dbc) {
            if channel.state.lock().retiring {
                channel.confirm_retired(dbc, &self.region, &self.map);
            }
        }
    }

    /// Clears the mailbox after the device rebooted or was replaced: nothing is owed, and
    /// a request still posted is withdrawn.
    pub fn reset_mailbox(&self, host: &mut ControlHost) {
        host.owed = None;
        let state = control::mailbox_state(&self.region);
        self.region.store_u32(
            layout::CTRL_STATE,
            control::MailboxState { seq: state.seq, phase: Phase::Free }.to_raw(),
            SeqCst,
        );
    }
}
