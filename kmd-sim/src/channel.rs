//! The host's side of one DMA Bridge Channel: ownership, the request-ring producer,
//! the response-ring consumer, and the table that maps a response's `req_id` back to
//! its buffer.

use std::sync::Arc;

use aicsim_abi::control::ActivationInfo;
use aicsim_abi::dbc::{CompletionCode, ResponseElement, Ring};
use aicsim_abi::iommu;
use aicsim_abi::layout::MemoryMap;
use aicsim_abi::memory::SharedMemory;
use aicsim_abi::ring::{Consumer, Producer, SharedIndices};
use parking_lot::Mutex;

use crate::bo::Bo;
use crate::error::KmdError;
use crate::shm::SharedRegion;

/// What a queued element belongs to.
pub(crate) struct Inflight {
    pub bo: Arc<Bo>,
    /// The last element of a slice: its response counts the slice done.
    pub ends_slice: bool,
    /// Elements of the same slice queued just before this one (their `req_id`s are the
    /// preceding ones); their entries are cleared when this one completes.
    pub segments_before: u16,
}

/// Most responses the handler consumes before publishing its head.
pub const DRAIN_BATCH: u32 = 128;

/// Request ids a channel hands out (`req_id` is 16 bits) before reusing one.
pub const REQ_IDS: usize = 1 << 16;

pub(crate) struct ChannelState {
    /// User that activated on this channel.
    pub owner: Option<u32>,
    /// Released by the host, but the device has not confirmed its deactivation (it
    /// failed, or the link went down): the channel is not free until it does or a
    /// reset clears it.
    pub retiring: bool,
    pub activation: Option<ActivationInfo>,
    /// The host's end of the request ring (it fills slots).
    pub requests: Producer,
    /// The host's end of the response ring (it takes slots).
    pub responses: Consumer,
    pub next_req_id: u16,
    /// The request id of the first element written since the channel's rings were
    /// reset: the element the device took `n`-th carries `req_base + n`, which binds
    /// each response (tagged with `n`) to its element.
    pub req_base: u16,
    /// Responses whose request id was not that of the element they answer (bound by
    /// their tag): the element fails with [`CompletionCode::CorruptResponse`].
    pub misrouted_responses: u64,
    /// Indexed by `req_id`; allocated on first activation.
    pub inflight: Vec<Option<Inflight>>,
    /// Responses whose `req_id` matched nothing queued.
    pub spurious_responses: u64,
    /// Set while the channel goes through a subsystem restart.
    pub ssr: Option<crate::SsrState>,
    /// Every subsystem-restart state the channel has been through.
    pub ssr_history: Vec<crate::SsrState>,
}

pub(crate) struct HostChannel {
    pub state: Mutex<ChannelState>,
}

impl HostChannel {
    pub fn new(ring: Ring) -> HostChannel {
        HostChannel {
            state: Mutex::new(ChannelState {
                owner: None,
                retiring: false,
                activation: None,
                requests: Producer::new(ring),
                responses: Consumer::new(ring),
                next_req_id: 0,
                req_base: 0,
                misrouted_responses: 0,
                inflight: Vec::new(),
                spurious_responses: 0,
                ssr: None,
                ssr_history: Vec::new(),
            }),
        }
    }

    /// Consumes every response on the ring, re-checking the tail after publishing the
    /// new head so that a response the device posted without an interrupt (it saw the
    /// ring non-empty) is never left behind. Completes buffers outside the channel lock
    /// and returns how many responses it consumed.
    pub fn drain(
        &self,
        dbc: usize,
        region: &SharedRegion,
        map: &MemoryMap,
        scratch: &mut Vec<(Inflight, u16, u64)>,
    ) -> usize {
        let mut consumed = 0;
        {
            let mut guard = self.state.lock();
            let ch = &mut *guard;
            if ch.activation.is_none() {
                return 0;
            }
            let ix = SharedIndices::host_responses(region, map, dbc);
            // A link reading all-ones or a device writing garbage: consume nothing.
            let mut waiting = ch.responses.refresh(&ix).unwrap_or(0);
            let mut unreadable = false;
            while waiting > 0 {
                // At most a batch per pass, as the kernel driver does, then publish the
                // head so the device gets its slots back.
                for _ in 0..waiting.min(DRAIN_BATCH) {
                    let slot = ch.responses.slot();
                    let mut raw = [0u8; 4];
                    if region.read(map.response_element(dbc, slot), &mut raw).is_err() {
                        unreadable = true;
                        break;
                    }
                    let rsp: ResponseElement = bytemuck::pod_read_unaligned(&raw);
                    let mut stamp = [0u8; 8];
                    let _ = region.read(map.response_stamp(dbc, slot), &mut stamp);
                    let posted_ns = u64::from_le_bytes(stamp);
                    let mut tag = [0u8; 4];
                    let _ = region.read(map.response_tag(dbc, slot), &mut tag);
                    ch.responses.pop();
                    consumed += 1;
                    // The tag says which element this answers, whatever id it names: a
                    // response never completes another buffer than its element's.
                    let id = ch.req_base.wrapping_add(u32::from_le_bytes(tag) as u16);
                    let mut status = rsp.status;
                    if rsp.req_id != id {
                        ch.misrouted_responses += 1;
                        status = CompletionCode::CorruptResponse as u16;
                    }
                    let id = usize::from(id);
                    match ch.inflight.get_mut(id).and_then(Option::take) {
                        Some(entry) => {
                            if entry.ends_slice {
                                for k in 1..=usize::from(entry.segments_before) {
                                    ch.inflight[(id + REQ_IDS - k) % REQ_IDS] = None;
                                }
                            }
                            scratch.push((entry, status, posted_ns));
                        }
                        None => ch.spurious_responses += 1,
                    }
                }
                // Publish, fence, re-check: the device interrupts only a host that had
                // drained everything, so stop only when the re-check finds nothing.
                let more = ch.responses.publish_and_recheck(&ix).unwrap_or(0);
                waiting = if unreadable { 0 } else { more };
            }
        }
        for (entry, status, posted_ns) in scratch.drain(..) {
            entry.bo.complete_element(entry.ends_slice, status, posted_ns);
        }
        consumed
    }

    /// Releases the channel after the device dropped its activation (or the device
    /// starts over): forgets every queued element, resets the host's ring indices and
    /// registers so the next activation starts from slot 0, unmaps the channel's host
    /// memory, and fails the waiters of the dropped buffers with `why`.
    pub fn release(&self, dbc: usize, region: &SharedRegion, map: &MemoryMap, why: KmdError) {
        self.let_go(dbc, region, map, why, true, None);
    }

    /// [`HostChannel::release`] (`confirmed`) or [`HostChannel::retire`], only if
    /// `user` still owns the channel (a reset may have released it and another user
    /// taken it meanwhile).
    pub fn let_go_if_owned(
        &self,
        dbc: usize,
        region: &SharedRegion,
        map: &MemoryMap,
        why: KmdError,
        user: u32,
        confirmed: bool,
    ) {
        if confirmed {
            self.let_go(dbc, region, map, why, true, Some(user));
        } else if self.state.lock().owner == Some(user) {
            self.retire(dbc, region, map, why);
        }
    }

    /// Fails the queued buffers with `why`, forgets the owner and unmaps the channel's
    /// host memory; with `reset_rings`, also starts the host's ring indices over (only
    /// once the device holds no activation there: a live device would take the moved
    /// tail for new elements and serve stale slots).
    fn let_go(
        &self,
        dbc: usize,
        region: &SharedRegion,
        map: &MemoryMap,
        why: KmdError,
        reset_rings: bool,
        owner: Option<u32>,
    ) {
        let dropped: Vec<Arc<Bo>> = {
            let mut ch = self.state.lock();
            if owner.is_some() && ch.owner != owner {
                return;
            }
            let dropped = ch.inflight.iter_mut().filter_map(|slot| slot.take().map(|entry| entry.bo)).collect();
            if reset_rings {
                ch.requests.reset(&SharedIndices::host_requests(region, map, dbc));
                ch.responses.reset(&SharedIndices::host_responses(region, map, dbc));
            }
            ch.activation = None;
            ch.owner = None;
            ch.retiring = false;
            // The device reaches no host memory through the channel any more: an element
            // still on its ring moves nothing.
            iommu::unmap_channel(region, map, dbc);
            dropped
        };
        for bo in dropped {
            bo.abort(why.clone());
        }
    }

    /// Takes the channel for `user` if it is free (no owner, not retiring).
    pub fn claim(&self, user: u32) -> bool {
        let mut ch = self.state.lock();
        if ch.owner.is_none() && !ch.retiring {
            ch.owner = Some(user);
            true
        } else {
            false
        }
    }

    /// [`HostChannel::release`] for a channel whose activation the device may still
    /// hold (it was active, or an activation was under way): it stays reserved, its
    /// ring indices as they are, until [`HostChannel::confirm_retired`]. Elements the
    /// device still takes from it move nothing (the channel is unmapped) and their
    /// responses are dropped.
    pub fn retire(&self, dbc: usize, region: &SharedRegion, map: &MemoryMap, why: KmdError) {
        let held = {
            let ch = self.state.lock();
            ch.activation.is_some() || ch.owner.is_some() || ch.retiring
        };
        self.let_go(dbc, region, map, why, !held, None);
        if held {
            self.state.lock().retiring = true;
        }
    }

    /// The device confirmed the channel has no activation: its ring indices start over
    /// and it is free.
    pub fn confirm_retired(&self, dbc: usize, region: &SharedRegion, map: &MemoryMap) {
        let mut ch = self.state.lock();
        ch.requests.reset(&SharedIndices::host_requests(region, map, dbc));
        ch.responses.reset(&SharedIndices::host_responses(region, map, dbc));
        ch.retiring = false;
    }
}
