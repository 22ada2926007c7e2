//! One open file of the driver and its ioctls.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::control::{ActivationInfo, ControlCommand};
use aicsim_abi::dbc::{
    Cmd, Direction, DoorbellAttr, DoorbellWidth, RequestElement, SemCommand, SemOp, NUM_DBC, SEM_VALUE_MAX,
};
use aicsim_abi::iommu;
use aicsim_abi::memory::SharedMemory;
use aicsim_abi::ring::{BadIndex, SharedIndices};
use aicsim_abi::run_record::RunRecord;
use parking_lot::Mutex;

use crate::bo::{Bo, BoState, Perf, Slicing};
use crate::channel::{ChannelState, Inflight};
use crate::error::{fail, Errno, KmdError, Result};
use aicsim_abi::clock::{self, RequestStamp, STAMP_WAKES_HOST};
use aicsim_abi::layout;

use crate::uapi::{
    AttachSliceEntry, BoInfo, ExecuteEntry, PartialExecuteEntry, PerfStatsEntry, Sem, DIR_FROM_DEVICE, DIR_TO_DEVICE,
    SEM_INSYNCFENCE, SEM_OUTSYNCFENCE,
};
use crate::Shared;

/// Largest bytes one request element moves; a longer slice becomes several elements,
/// as a scatter-gather list of this segment size would.
pub const MAX_SEGMENT_BYTES: u64 = 2 << 20;

/// WAIT_BO's timeout when the caller passes 0.
pub const DEFAULT_WAIT_MS: u64 = 5000;

/// When the elements of one execute call reach the channel, on the simulated clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Simulated nanoseconds.
    pub time_ns: u64,
    /// The response to the call's last element ends what the host waits for.
    pub wakes_host: bool,
}

/// An open file of the driver: a user with its buffer objects and channels.
pub struct Client {
    shared: Arc<Shared>,
    user: u32,
    bos: Mutex<HashMap<u32, Arc<Bo>>>,
    _driver: Arc<crate::Kmd>,
}

/// A mapped buffer object (MMAP_BO): reads and writes go through the shared region by
/// offset; no reference into shared memory is ever handed out.
#[derive(Clone)]
pub struct BoMapping {
    shared: Arc<Shared>,
    bo: Arc<Bo>,
}

impl BoMapping {
    pub fn info(&self) -> BoInfo {
        BoInfo { handle: self.bo.handle, offset: self.bo.offset, size: self.bo.size }
    }

    pub fn size(&self) -> u64 {
        self.bo.size
    }

    /// Copies `data` into the buffer at `offset`. EBUSY while the buffer is queued to the
    /// device: its bytes are the device's until the execution completes.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // The state lock is held across the copy, so the buffer cannot be queued midway.
        let _idle = self.idle()?;
        self.shared.region.write(self.bo.offset + offset, data).map_err(|e| KmdError::new(Errno::EINVAL, e.to_string()))
    }

    /// Copies bytes at `offset` out of the buffer into `buf`. EBUSY while the buffer is
    /// queued (the device may be writing it).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        let _idle = self.idle()?;
        self.shared.region.read(self.bo.offset + offset, buf).map_err(|e| KmdError::new(Errno::EINVAL, e.to_string()))
    }

    /// The buffer's state, locked, if it is not queued to the device.
    fn idle(&self) -> Result<parking_lot::MutexGuard<'_, BoState>> {
        let st = self.bo.state.lock();
        if st.queued {
            return fail(Errno::EBUSY, format!("buffer {} is queued to the device", self.bo.handle));
        }
        Ok(st)
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.bo.size => Ok(()),
            _ => fail(
                Errno::EINVAL,
                format!("access [{offset}, +{len}) is outside the {}-byte buffer {}", self.bo.size, self.bo.handle),
            ),
        }
    }
}

fn sem_command(sem: &Sem) -> Result<Option<SemCommand>> {
    if sem.pad != 0 || sem.flags & !(SEM_INSYNCFENCE | SEM_OUTSYNCFENCE) != 0 || sem.presync > 1 {
        return fail(Errno::EINVAL, "semaphore has nonzero padding or unknown flags");
    }
    if sem.cmd == 0 {
        if *sem != Sem::default() {
            return fail(Errno::EINVAL, "semaphore with cmd 0 (none) has other fields set");
        }
        return Ok(None);
    }
    let Some(op) = SemOp::from_raw(sem.cmd.into()) else {
        return fail(Errno::EINVAL, format!("semaphore cmd {} is above 6", sem.cmd));
    };
    if sem.val > SEM_VALUE_MAX {
        return fail(Errno::EINVAL, format!("semaphore value {} does not fit in 12 bits", sem.val));
    }
    if sem.index > 31 {
        return fail(Errno::EINVAL, format!("semaphore index {} does not fit in 5 bits", sem.index));
    }
    Ok(Some(SemCommand {
        op,
        index: sem.index,
        value: sem.val,
        presync: sem.presync == 1,
        inbound_fence: sem.flags & SEM_INSYNCFENCE != 0,
        outbound_fence: sem.flags & SEM_OUTSYNCFENCE != 0,
    }))
}

impl Client {
    pub(crate) fn new(driver: Arc<crate::Kmd>, shared: Arc<Shared>) -> Client {
        let user = shared.next_user.fetch_add(1, Relaxed);
        Client { shared, user, bos: Mutex::new(HashMap::new()), _driver: driver }
    }

    /// This client's user id.
    pub fn user(&self) -> u32 {
        self.user
    }

    fn bo(&self, handle: u32) -> Result<Arc<Bo>> {
        match self.bos.lock().get(&handle) {
            Some(bo) => Ok(bo.clone()),
            None => fail(Errno::ENOENT, format!("no buffer object with handle {handle}")),
        }
    }

    fn check_dbc(&self, dbc: u32) -> Result<usize> {
        if dbc as usize >= NUM_DBC {
            return fail(Errno::EINVAL, format!("channel {dbc} out of range (the device has {NUM_DBC})"));
        }
        Ok(dbc as usize)
    }

    fn check_online(&self) -> Result<()> {
        if self.shared.online() {
            Ok(())
        } else {
            fail(Errno::ENODEV, "device is offline")
        }
    }

    /// CREATE_BO: a buffer of `size` bytes rounded up to whole pages.
    pub fn create_bo(&self, size: u64) -> Result<u32> {
        if size == 0 {
            return fail(Errno::EINVAL, "buffer size 0");
        }
        let host_base = self.shared.map.host_offset();
        let mut host_mem = self.shared.host_mem.lock();
        let Some(rounded) = host_mem.rounded(size) else {
            return fail(Errno::EINVAL, format!("buffer size {size} overflows"));
        };
        let Some(start) = host_mem.alloc(rounded) else {
            return fail(
                Errno::ENOMEM,
                format!("no {rounded}-byte extent free in the {}-byte host memory window", host_mem.total_bytes()),
            );
        };
        drop(host_mem);
        // A buffer is created zeroed: the extent may hold what its last owner left.
        self.shared.region.zero(host_base + start, rounded).expect("extents lie inside the host window");
        let handle = self.shared.next_handle.fetch_add(1, Relaxed);
        let bo = Arc::new(Bo::new(handle, host_base + start, rounded, Arc::downgrade(&self.shared)));
        let mut bos = self.bos.lock();
        // The channels this user owns may reach the new buffer.
        for (dbc, channel) in self.shared.channels.iter().enumerate() {
            if channel.state.lock().owner == Some(self.user) {
                iommu::map(&self.shared.region, &self.shared.map, dbc, bo.offset, bo.size);
            }
        }
        bos.insert(handle, bo);
        Ok(handle)
    }

    /// Closes a buffer handle. A queued buffer lives on until its elements complete.
    pub fn free_bo(&self, handle: u32) -> Result<()> {
        match self.bos.lock().remove(&handle) {
            Some(_) => Ok(()),
            None => fail(Errno::ENOENT, format!("no buffer object with handle {handle}")),
        }
    }

    /// MMAP_BO.
    pub fn mmap_bo(&self, handle: u32) -> Result<BoMapping> {
        Ok(BoMapping { shared: self.shared.clone(), bo: self.bo(handle)? })
    }

    /// ATTACH_SLICE_BO: describes how the buffer moves on channel `dbc` in direction
    /// `dir`, and builds its request elements.
    pub fn attach_slice_bo(&self, handle: u32, dbc: u32, dir: u32, slices: &[AttachSliceEntry]) -> Result<()> {
        let dbc_index = self.check_dbc(dbc)?;
        let direction = match dir {
            DIR_TO_DEVICE => Direction::ToDevice,
            DIR_FROM_DEVICE => Direction::FromDevice,
            _ => return fail(Errno::EINVAL, format!("direction {dir} is neither to-device (1) nor from-device (2)")),
        };
        if slices.is_empty() {
            return fail(Errno::EINVAL, "no slices");
        }
        let bo = self.bo(handle)?;
        self.check_owner(dbc_index)?;
        let mut elements = Vec::new();
        let mut ends_slice = Vec::new();
        let mut offsets = Vec::new();
        for (i, s) in slices.iter().enumerate() {
            if s.size == 0 {
                return fail(Errno::EINVAL, format!("slice {i} has size 0"));
            }
            match s.offset.checked_add(s.size) {
                Some(end) if end <= bo.size => {}
                _ => {
                    return fail(
                        Errno::EINVAL,
                        format!("slice {i} [{}, +{}) runs past the {}-byte buffer", s.offset, s.size, bo.size),
                    )
                }
            }
            let mut presync = None;
            let mut post = Vec::new();
            for sem in &s.sems {
                if let Some(cmd) = sem_command(sem)? {
                    if cmd.presync {
                        if presync.replace(cmd).is_some() {
                            return fail(Errno::EINVAL, format!("slice {i} has more than one presync semaphore"));
                        }
                    } else {
                        post.push(cmd);
                    }
                }
            }
            let doorbell = match s.db_len {
                0 => None,
                bits => {
                    let Some(width) = DoorbellWidth::from_bits(bits) else {
                        return fail(Errno::EINVAL, format!("slice {i} doorbell width {bits} is not 0, 8, 16 or 32"));
                    };
                    if s.db_addr % width.bytes() != 0 {
                        return fail(
                            Errno::EINVAL,
                            format!(
                                "slice {i} doorbell address {:#x} is not aligned to {} bytes",
                                s.db_addr,
                                width.bytes()
                            ),
                        );
                    }
                    Some(DoorbellAttr { width })
                }
            };
            let segments = s.size.div_ceil(MAX_SEGMENT_BYTES);
            for seg in 0..segments {
                let first = seg == 0;
                let last = seg + 1 == segments;
                let at = seg * MAX_SEGMENT_BYTES;
                let len = (s.size - at).min(MAX_SEGMENT_BYTES);
                let (host, dev) = (bo.offset + s.offset + at, s.dev_addr.wrapping_add(at));
                let (src_addr, dest_addr) = if direction == Direction::ToDevice { (host, dev) } else { (dev, host) };
                let mut e = RequestElement {
                    cmd: Cmd { direction, completion: last, bulk: true, force_msi: false }.encode(),
                    src_addr,
                    dest_addr,
                    len: len as u32,
                    ..Default::default()
                };
                let mut sems = Vec::new();
                if first {
                    sems.extend(presync);
                }
                if last {
                    sems.extend(post.iter().copied());
                    if let Some(db) = doorbell {
                        e.db_addr = s.db_addr;
                        e.db_attr = DoorbellAttr::encode(Some(db));
                        e.db_data = s.db_data;
                    }
                }
                for (slot, sem) in e.sem_cmd.iter_mut().zip(sems) {
                    *slot = sem.encode();
                }
                elements.push(e);
                ends_slice.push(last);
                offsets.push(s.offset + at);
            }
        }
        if elements.len() as u64 > u64::from(self.shared.ring.capacity()) {
            return fail(
                Errno::ENOSPC,
                format!(
                    "buffer needs {} ring elements but the ring holds {}",
                    elements.len(),
                    self.shared.ring.capacity()
                ),
            );
        }
        let mut st = bo.state.lock();
        if st.slicing.is_some() {
            return fail(Errno::EINVAL, format!("buffer {handle} is already sliced; detach it first"));
        }
        st.slicing = Some(Slicing { dbc, dir, elements, ends_slice, offsets, slices: slices.len() as u32 });
        Ok(())
    }

    /// DETACH_SLICE_BO.
    pub fn detach_slice_bo(&self, handle: u32) -> Result<()> {
        let bo = self.bo(handle)?;
        let mut st = bo.state.lock();
        if st.queued {
            return fail(Errno::EBUSY, format!("buffer {handle} is queued"));
        }
        if st.slicing.take().is_none() {
            return fail(Errno::EINVAL, format!("buffer {handle} is not sliced"));
        }
        Ok(())
    }

    fn check_owner(&self, dbc: usize) -> Result<()> {
        let ch = self.shared.channels[dbc].state.lock();
        match ch.owner {
            Some(owner) if owner == self.user => Ok(()),
            Some(_) => fail(Errno::EPERM, format!("channel {dbc} belongs to another user")),
            None => fail(Errno::EPERM, format!("channel {dbc} has no activation of this user")),
        }
    }

    /// EXECUTE_BO: queues every listed buffer's elements on channel `dbc`, all or none.
    pub fn execute_bo(&self, dbc: u32, entries: &[ExecuteEntry]) -> Result<()> {
        self.queue(dbc, entries, None, Stamp::default())
    }

    /// EXECUTE_BO on the simulated clock (a simulator extension): every element reaches
    /// the channel at `stamp.time_ns`; with `stamp.wakes_host` the response to the last
    /// one is one the host reacts to (see `aicsim_abi::clock`).
    pub fn execute_bo_at(&self, dbc: u32, entries: &[ExecuteEntry], stamp: Stamp) -> Result<()> {
        self.queue(dbc, entries, None, stamp)
    }

    /// PARTIAL_EXECUTE_BO: like EXECUTE_BO, but each buffer moves only its first
    /// `resize` bytes (1..=its size).
    pub fn partial_execute_bo(&self, dbc: u32, entries: &[PartialExecuteEntry]) -> Result<()> {
        let plain: Vec<ExecuteEntry> = entries.iter().map(|e| ExecuteEntry { handle: e.handle, dir: e.dir }).collect();
        let resizes: Vec<u64> = entries.iter().map(|e| e.resize).collect();
        self.queue(dbc, &plain, Some(&resizes), Stamp::default())
    }

    /// EXECUTE_BO and its variants: checks every buffer, reserves the ring for all their
    /// elements at once (all or nothing), writes and publishes them, rings the doorbell.
    fn queue(&self, dbc: u32, entries: &[ExecuteEntry], resizes: Option<&[u64]>, stamp: Stamp) -> Result<()> {
        let received = Instant::now();
        let dbc = self.check_dbc(dbc)?;
        self.check_online()?;
        let bos = self.listed_buffers(entries)?;
        let shared = &self.shared;
        let mut ch = shared.channels[dbc].state.lock();
        self.check_channel_is_ours(&ch, dbc)?;
        let mut states = Vec::with_capacity(bos.len());
        let mut plans = Vec::with_capacity(bos.len());
        for (i, (bo, e)) in bos.iter().zip(entries).enumerate() {
            let st = bo.state.lock();
            plans.push(element_plan(bo, &st, e, resizes.map(|r| r[i]), dbc)?);
            states.push(st);
        }
        let needed: u32 = plans.iter().map(|p| p.count).sum();
        let ring = shared.ring;
        if needed > ring.capacity() {
            return fail(Errno::ENOSPC, format!("{needed} elements never fit a ring of {}", ring.capacity()));
        }
        let ix = SharedIndices::host_requests(&shared.region, &shared.map, dbc);
        let free = match ch.requests.room(&ix, needed) {
            Ok(free) => free,
            Err(BadIndex(head)) => {
                return fail(Errno::ENODEV, format!("channel {dbc} request head reads {head:#x}: link down"))
            }
        };
        if free < needed {
            return fail(Errno::EAGAIN, format!("channel {dbc} has {free} free elements, {needed} needed"));
        }
        let level = ch.requests.used();
        let last_bo = bos.len() - 1;
        for (b, ((bo, guard), plan)) in bos.iter().zip(states.iter_mut()).zip(&plans).enumerate() {
            // Only the last element of the whole submission carries the host's wake flag.
            let wakes = stamp.wakes_host && b == last_bo;
            let st = &mut **guard;
            let slicing = st.slicing.as_ref().expect("checked by element_plan");
            let (elements, ends, slices) = match &plan.truncated {
                Some((e, f, n)) => (e.as_slice(), f.as_slice(), *n),
                None => (slicing.elements.as_slice(), slicing.ends_slice.as_slice(), slicing.slices),
            };
            self.write_elements(&mut ch, dbc, bo, elements, ends, Stamp { wakes_host: wakes, ..stamp });
            st.slices_left = slices;
            bo.set_queued(st, true);
            st.executions += 1;
            st.error = None;
            st.aborted = None;
            st.completed_at_ns = 0;
            st.perf = Some(Perf {
                received,
                submitted: received,
                processed: received,
                queue_level_before: level,
                num_queue_element: plan.count,
            });
        }
        // The elements are the device's once the tail covers them; the doorbell wakes it.
        ch.requests.publish(&ix);
        let submitted = Instant::now();
        for st in states.iter_mut() {
            if let Some(p) = &mut st.perf {
                p.submitted = submitted;
            }
        }
        drop(states);
        drop(ch);
        shared.ring_device();
        Ok(())
    }

    /// The buffer objects an EXECUTE_BO lists, each named once.
    fn listed_buffers(&self, entries: &[ExecuteEntry]) -> Result<Vec<Arc<Bo>>> {
        if entries.is_empty() {
            return fail(Errno::EINVAL, "no buffers to execute");
        }
        let bos = {
            let table = self.bos.lock();
            let mut bos = Vec::with_capacity(entries.len());
            for e in entries {
                match table.get(&e.handle) {
                    Some(bo) => bos.push(bo.clone()),
                    None => return fail(Errno::ENOENT, format!("no buffer object with handle {}", e.handle)),
                }
            }
            bos
        };
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|o| o.handle == e.handle) {
                return fail(Errno::EINVAL, format!("buffer {} listed twice", e.handle));
            }
        }
        Ok(bos)
    }

    /// The channel is usable by this client: activated by it, not restarting.
    fn check_channel_is_ours(&self, ch: &ChannelState, dbc: usize) -> Result<()> {
        if ch.ssr.is_some() {
            return fail(Errno::EPIPE, format!("channel {dbc} is in a subsystem restart"));
        }
        match ch.owner {
            Some(owner) if owner == self.user => Ok(()),
            Some(_) => fail(Errno::EPERM, format!("channel {dbc} belongs to another user")),
            None => fail(Errno::EPERM, format!("channel {dbc} has no activation")),
        }
    }

    /// Writes one buffer's elements (with fresh request ids) and their stamps at the
    /// ring's tail, and records what each belongs to; publishing is the caller's.
    fn write_elements(
        &self,
        ch: &mut ChannelState,
        dbc: usize,
        bo: &Arc<Bo>,
        elements: &[RequestElement],
        ends: &[bool],
        stamp: Stamp,
    ) {
        let shared = &self.shared;
        let mut run = 0u16;
        for (i, (template, &ends_slice)) in elements.iter().zip(ends).enumerate() {
            let mut e = *template;
            e.req_id = ch.next_req_id;
            ch.next_req_id = ch.next_req_id.wrapping_add(1);
            let slot = ch.requests.slot();
            shared
                .region
                .write(shared.map.request_element(dbc, slot), bytemuck::bytes_of(&e))
                .expect("ring inside the region");
            let last = i + 1 == elements.len();
            let flags = if stamp.wakes_host && last { STAMP_WAKES_HOST } else { 0 };
            let crc = aicsim_abi::dbc::element_crc(bytemuck::cast_ref(&e));
            let time = RequestStamp { time_ns: stamp.time_ns, flags, crc };
            shared
                .region
                .write(shared.map.request_stamp(dbc, slot), bytemuck::bytes_of(&time))
                .expect("stamps inside the region");
            ch.inflight[usize::from(e.req_id)] = Some(Inflight { bo: bo.clone(), ends_slice, segments_before: run });
            run = if ends_slice { 0 } else { run + 1 };
            ch.requests.push();
        }
    }

    /// WAIT_BO: waits for the buffer's current execution; `timeout_ms` 0 means 5000.
    pub fn wait_bo(&self, handle: u32, timeout_ms: u64, dbc: u32) -> Result<()> {
        let dbc = self.check_dbc(dbc)?;
        let bo = self.bo(handle)?;
        match bo.state.lock().slicing.as_ref() {
            None => return fail(Errno::EINVAL, format!("buffer {handle} is not sliced")),
            Some(s) if s.dbc as usize != dbc => {
                return fail(Errno::EINVAL, format!("buffer {handle} is sliced for channel {}, not {dbc}", s.dbc))
            }
            Some(_) => {}
        }
        let timeout = Duration::from_millis(if timeout_ms == 0 { DEFAULT_WAIT_MS } else { timeout_ms });
        let shared = &self.shared;
        let mut scratch = Vec::new();
        let poll = || {
            let link_up = !shared.link_down.load(std::sync::atomic::Ordering::Acquire);
            if shared.config.wait_busy_poll && shared.config.stepping == crate::Stepping::Threads && link_up {
                shared.channels[dbc].drain(dbc, &shared.region, &shared.map, &mut scratch);
            }
        };
        bo.wait(timeout, shared.config.wait_spin, poll, || shared.online())
    }

    /// On the simulated clock: when the buffer's latest execution completed (the posting
    /// time of its last response, simulated nanoseconds).
    pub fn completed_at(&self, handle: u32) -> Result<u64> {
        let bo = self.bo(handle)?;
        let st = bo.state.lock();
        if st.queued || st.executions == 0 {
            return fail(Errno::EINVAL, format!("buffer {handle} has no finished execution"));
        }
        Ok(st.completed_at_ns)
    }

    /// Simulated clock: promises that no element stamped earlier than `promise_ns` will
    /// be queued on `dbc` from now on, except those that follow waking responses beyond
    /// the first `acked`; the device may advance up to there (see
    /// `aicsim_abi::clock`). [`NO_PROMISE`] withdraws the bound.
    pub fn promise(&self, dbc: u32, promise_ns: u64, acked: u32) -> Result<()> {
        let dbc = self.check_dbc(dbc)?;
        self.check_owner(dbc)?;
        let map = &self.shared.map;
        // Release, promise before acknowledgement: a device that sees the count sees the
        // promise that goes with it.
        self.shared.region.store_u64(map.clock_reg(dbc, clock::PROMISE_NS), promise_ns, Release);
        self.shared.region.store_u32(map.clock_reg(dbc, clock::HOST_ACKED), acked, Release);
        self.shared.ring_device();
        Ok(())
    }

    /// Simulated clock: the least time from a waking response on `dbc` to the next
    /// element the host may queue because of it.
    pub fn set_lookahead(&self, dbc: u32, lookahead_ns: u64) -> Result<()> {
        let dbc = self.check_dbc(dbc)?;
        self.check_owner(dbc)?;
        self.shared.region.store_u64(self.shared.map.clock_reg(dbc, clock::LOOKAHEAD_NS), lookahead_ns, Release);
        Ok(())
    }

    /// Simulated clock: how far the device has simulated, and how many waking responses
    /// it has posted on `dbc`. Read in that order, so every waking response earlier than
    /// the time returned is counted.
    pub fn device_progress(&self, dbc: u32) -> Result<(u64, u32)> {
        let dbc = self.check_dbc(dbc)?;
        let map = &self.shared.map;
        let now = self.shared.region.load_u64(layout::DEVICE_NOW_NS, Acquire);
        Ok((now, self.shared.region.load_u32(map.clock_reg(dbc, clock::DEVICE_WAKES), Acquire)))
    }

    /// PERF_STATS_BO for the latest execution of each buffer.
    pub fn perf_stats_bo(&self, dbc: u32, handles: &[u32]) -> Result<Vec<PerfStatsEntry>> {
        self.check_dbc(dbc)?;
        let mut out = Vec::with_capacity(handles.len());
        for &handle in handles {
            let bo = self.bo(handle)?;
            let st = bo.state.lock();
            let Some(p) = st.perf.filter(|_| !st.queued) else {
                return fail(Errno::EINVAL, format!("buffer {handle} has no finished execution"));
            };
            let us = |d: Duration| d.as_micros().min(u32::MAX as u128) as u32;
            out.push(PerfStatsEntry {
                handle,
                queue_level_before: p.queue_level_before,
                num_queue_element: p.num_queue_element,
                submit_latency_us: us(p.submitted - p.received),
                device_latency_us: us(p.processed.saturating_duration_since(p.submitted)),
            });
        }
        Ok(out)
    }

    /// Reads the device's record of run `seq` (from 1) of this user's activation on
    /// `dbc`; `None` if the slot holds another run (not reached yet, or overwritten).
    pub fn run_record(&self, dbc: u32, seq: u64) -> Result<Option<RunRecord>> {
        let dbc = self.check_dbc(dbc)?;
        self.check_owner(dbc)?;
        let mut raw = [0u8; 64];
        self.shared.region.read(self.shared.map.run_record(dbc, seq), &mut raw).expect("records inside the region");
        let record: RunRecord = bytemuck::pod_read_unaligned(&raw);
        Ok((record.seq == seq).then_some(record))
    }

    /// MANAGE: turns per-instruction tracing of the activation on `dbc` on or off.
    pub fn set_trace(&self, dbc: u32, on: bool) -> Result<()> {
        self.check_owner(self.check_dbc(dbc)?)?;
        self.shared.control(ControlCommand::Trace { dbc, on }).map(drop)
    }

    /// MANAGE: the device's profile of run `seq` of this user's activation on `dbc`,
    /// DMAed into a buffer of this user's (see `aicsim_abi::profile`).
    pub fn read_profile(&self, dbc: u32, seq: u64) -> Result<Vec<u8>> {
        self.check_owner(self.check_dbc(dbc)?)?;
        let mut len = 64 << 10;
        loop {
            let handle = self.create_bo(len)?;
            let map = self.mmap_bo(handle)?;
            let answer =
                self.shared.control(ControlCommand::ReadProfile { dbc, seq, host_addr: map.info().offset, len });
            let result = answer.and_then(|v| {
                let mut bytes = vec![0u8; v[1] as usize];
                map.read(0, &mut bytes)?;
                Ok((v[0], bytes))
            });
            self.free_bo(handle)?;
            let (needed, bytes) = result?;
            if !bytes.is_empty() {
                return Ok(bytes);
            }
            len = needed;
        }
    }

    /// MANAGE: loads a program container; returns the device's program id.
    pub fn load_program(&self, container: &[u8]) -> Result<u32> {
        if container.is_empty() {
            return fail(Errno::EINVAL, "empty program container");
        }
        let handle = self.create_bo(container.len() as u64)?;
        let map = self.mmap_bo(handle)?;
        map.write(0, container)?;
        let result = self
            .shared
            .control(ControlCommand::LoadProgram { host_addr: map.info().offset, len: container.len() as u64 });
        self.free_bo(handle)?;
        let device_id = result.map(|v| v[0] as u32)?;
        let program = self.shared.next_program.fetch_add(1, Relaxed);
        self.shared.programs.lock().insert(program, crate::LoadedProgram { device_id, owner: self.user });
        Ok(program)
    }

    /// The device's id of `program`, loaded by this user.
    fn own_program(&self, program: u32) -> Result<u32> {
        match self.shared.programs.lock().get(&program) {
            Some(p) if p.owner == self.user => Ok(p.device_id),
            Some(_) => fail(Errno::EPERM, format!("program {program} belongs to another user")),
            None => fail(Errno::ENOENT, format!("no program {program} is loaded")),
        }
    }

    /// MANAGE: unloads a program of this user's with no activations left.
    pub fn unload_program(&self, program: u32) -> Result<()> {
        let device_id = self.own_program(program)?;
        self.shared.control(ControlCommand::UnloadProgram { program: device_id })?;
        self.shared.programs.lock().remove(&program);
        Ok(())
    }

    /// MANAGE: activates a loaded program on a free channel, which this user then owns.
    /// Returns the channel and what the device assigned. A channel the device reports
    /// still busy (it holds an activation the host had given up on) is retired and the
    /// next free one tried.
    pub fn activate(&self, program: u32) -> Result<(u32, ActivationInfo)> {
        self.check_online()?;
        let device_id = self.own_program(program)?;
        let shared = &self.shared;
        let mut tried = 0;
        loop {
            let Some(dbc) = (0..NUM_DBC).find(|&d| shared.channels[d].claim(self.user)) else {
                let why = if tried == 0 { "are in use" } else { "are in use or held by the device" };
                return fail(Errno::EBUSY, format!("all {NUM_DBC} channels {why}"));
            };
            tried += 1;
            match shared.control(ControlCommand::Activate { program: device_id, dbc: dbc as u32 }) {
                Ok(values) => {
                    let info = ActivationInfo::from_values(values);
                    let bos = self.bos.lock();
                    let mut ch = shared.channels[dbc].state.lock();
                    if ch.owner != Some(self.user) {
                        // A reset or the link took the channel while the device was
                        // activating it: the device's activation is nobody's now.
                        if ch.owner.is_none() {
                            ch.retiring = true;
                        }
                        return fail(Errno::ENODEV, format!("channel {dbc} was released while it was being activated"));
                    }
                    // The channel may reach every buffer of its user's (and, through
                    // create_bo, every later one), and nothing else.
                    for bo in bos.values() {
                        iommu::map(&shared.region, &shared.map, dbc, bo.offset, bo.size);
                    }
                    drop(bos);
                    if ch.inflight.is_empty() {
                        ch.inflight.resize_with(crate::channel::REQ_IDS, || None);
                    }
                    ch.activation = Some(info);
                    ch.req_base = ch.next_req_id;
                    return Ok((dbc as u32, info));
                }
                Err(e) if e.channel_in_use => {
                    // The device still holds an activation there: reserve the channel
                    // until a deactivation is confirmed, and try another.
                    let mut ch = shared.channels[dbc].state.lock();
                    ch.owner = None;
                    ch.retiring = true;
                }
                Err(e) => {
                    shared.channels[dbc].state.lock().owner = None;
                    return Err(e);
                }
            }
        }
    }

    /// MANAGE: tears down this user's activation on `dbc`. Buffers still queued there
    /// are abandoned and their waiters get EPERM. If the device does not confirm (a
    /// timeout, the device gone), the channel stays reserved until it does or a reset.
    pub fn deactivate(&self, dbc: u32) -> Result<()> {
        let dbc = self.check_dbc(dbc)?;
        self.check_owner(dbc)?;
        // Checked again where no other command can come between: a reset may have
        // released the channel and another user activated on it meanwhile.
        let result = self
            .shared
            .control_checked(ControlCommand::Deactivate { dbc: dbc as u32 }, || self.check_owner(dbc).map(drop));
        if result.as_ref().is_err_and(|e| e.errno == Errno::EPERM) {
            return result.map(drop);
        }
        let why = KmdError::new(Errno::EPERM, format!("channel {dbc} was torn down while the buffer was queued"));
        // Confirmed when the device deactivated it or had no activation there.
        let confirmed = match &result {
            Ok(_) => true,
            Err(e) => e.errno == Errno::ENOENT,
        };
        let shared = &self.shared;
        shared.channels[dbc].let_go_if_owned(dbc, &shared.region, &shared.map, why, self.user, confirmed);
        result.map(drop)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for dbc in 0..NUM_DBC {
            let mine = self.shared.channels[dbc].state.lock().owner == Some(self.user);
            if mine {
                let _ = self.deactivate(dbc as u32);
            }
        }
    }
}

/// The elements one buffer of an EXECUTE_BO puts on the ring: all of its slicing, or
/// (PARTIAL_EXECUTE_BO) those that move its first `resize` bytes.
struct ElementPlan {
    /// Elements on the ring.
    count: u32,
    /// A partial execution's own elements, slice ends and slice count; `None`: the
    /// buffer's slicing as it is.
    truncated: Option<(Vec<RequestElement>, Vec<bool>, u32)>,
}

/// Checks that buffer `e` can be queued on channel `dbc` as asked and plans its elements.
fn element_plan(bo: &Bo, st: &BoState, e: &ExecuteEntry, resize: Option<u64>, dbc: usize) -> Result<ElementPlan> {
    if let Some(r) = resize {
        if r == 0 || r > bo.size {
            return fail(Errno::EINVAL, format!("resize {r} of buffer {} is not in 1..={}", e.handle, bo.size));
        }
    }
    let plan = match &st.slicing {
        None => return fail(Errno::EINVAL, format!("buffer {} is not sliced", e.handle)),
        Some(s) if s.dbc as usize != dbc => {
            return fail(Errno::EINVAL, format!("buffer {} is sliced for channel {}, not {dbc}", e.handle, s.dbc))
        }
        Some(s) if s.dir != e.dir => {
            return fail(Errno::EINVAL, format!("buffer {} is sliced for direction {}, not {}", e.handle, s.dir, e.dir))
        }
        Some(s) => match resize.filter(|&r| r < bo.size) {
            Some(r) => {
                let truncated = s.truncated(r);
                ElementPlan { count: truncated.0.len() as u32, truncated: Some(truncated) }
            }
            None => ElementPlan { count: s.elements.len() as u32, truncated: None },
        },
    };
    if st.queued {
        return fail(Errno::EINVAL, format!("buffer {} is already queued", e.handle));
    }
    Ok(plan)
}
