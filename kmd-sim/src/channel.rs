//! The host's side of one DMA Bridge Channel: ownership, the request-ring producer,
//! the response-ring consumer, and the table that maps a response's `req_id` back to
//! its buffer.

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::Arc;

use aicsim_device::control::ActivationInfo;
use aicsim_device::dbc::{ResponseElement, Ring, RSP_HEAD, RSP_TAIL};
use aicsim_device::layout::MemoryMap;
use aicsim_device::memory::SharedMemory;
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
pub const DRAIN_BATCH: usize = 128;

pub(crate) struct ChannelState {
    /// User that activated on this channel.
    pub owner: Option<u32>,
    pub activation: Option<ActivationInfo>,
    /// Next request slot to fill.
    pub tail: u32,
    /// Last request head read from the device; refreshed only when the ring looks full.
    pub head_cache: u32,
    /// Next response slot to consume.
    pub rsp_head: u32,
    pub next_req_id: u16,
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
    pub fn new() -> HostChannel {
        HostChannel {
            state: Mutex::new(ChannelState {
                owner: None,
                activation: None,
                tail: 0,
                head_cache: 0,
                rsp_head: 0,
                next_req_id: 0,
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
        ring: Ring,
        scratch: &mut Vec<(Inflight, u16, u64)>,
    ) -> usize {
        let mut consumed = 0;
        {
            let mut ch = self.state.lock();
            if ch.activation.is_none() {
                return 0;
            }
            // Acquire: response contents are visible once we see the tail covering them.
            let mut tail = region.load_u32(map.dbc_reg(dbc, RSP_TAIL), Acquire);
            loop {
                if !ring.contains(tail) {
                    // The link reads all-ones or the device wrote garbage: consume nothing.
                    break;
                }
                // At most a batch per pass, as the kernel driver does, then publish the
                // head so the device gets its slots back.
                let mut batch = 0;
                while ch.rsp_head != tail && batch < DRAIN_BATCH {
                    batch += 1;
                    let mut raw = [0u8; 4];
                    if region.read(map.response_element(dbc, ch.rsp_head), &mut raw).is_err() {
                        break;
                    }
                    let rsp: ResponseElement = bytemuck::pod_read_unaligned(&raw);
                    let mut stamp = [0u8; 8];
                    let _ = region.read(map.response_stamp(dbc, ch.rsp_head), &mut stamp);
                    let posted_ns = u64::from_le_bytes(stamp);
                    ch.rsp_head = ring.next(ch.rsp_head);
                    consumed += 1;
                    let id = usize::from(rsp.req_id);
                    match ch.inflight.get_mut(id).and_then(Option::take) {
                        Some(entry) => {
                            if entry.ends_slice {
                                for k in 1..=usize::from(entry.segments_before) {
                                    ch.inflight[(id + 65536 - k) % 65536] = None;
                                }
                            }
                            scratch.push((entry, rsp.status, posted_ns));
                        }
                        None => ch.spurious_responses += 1,
                    }
                }
                // Store, SeqCst fence, re-check: the host half of the pairing with
                // the device's tail store and head load (see the firmware).
                region.store_u32(map.dbc_reg(dbc, RSP_HEAD), ch.rsp_head, Release);
                fence(SeqCst);
                tail = region.load_u32(map.dbc_reg(dbc, RSP_TAIL), Acquire);
                if tail == ch.rsp_head {
                    break;
                }
            }
        }
        for (entry, status, posted_ns) in scratch.drain(..) {
            entry.bo.complete_element(entry.ends_slice, status, posted_ns);
        }
        consumed
    }

    /// Releases the channel: forgets every queued element (the device dropped them),
    /// resets the host's ring indices and registers so the next activation starts from
    /// slot 0, and fails the waiters of the dropped buffers with `why`.
    pub fn release(&self, dbc: usize, region: &SharedRegion, map: &MemoryMap, why: KmdError) {
        let dropped: Vec<Arc<Bo>> = {
            let mut ch = self.state.lock();
            let dropped = ch.inflight.iter_mut().filter_map(|slot| slot.take().map(|entry| entry.bo)).collect();
            ch.tail = 0;
            ch.head_cache = 0;
            ch.rsp_head = 0;
            ch.activation = None;
            ch.owner = None;
            region.store_u32(map.dbc_reg(dbc, aicsim_device::dbc::REQ_TAIL), 0, Release);
            region.store_u32(map.dbc_reg(dbc, RSP_HEAD), 0, Release);
            dropped
        };
        for bo in dropped {
            bo.abort(why.clone());
        }
    }
}
