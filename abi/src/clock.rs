//! The simulated clock's side channel: what host and device tell each other about
//! simulated time, beside the hardware's registers and rings (which carry no time).
//!
//! A host that runs on the simulated clock stamps every request element with the
//! simulated moment it reaches the channel ([`RequestStamp`], one per ring slot), and
//! the device stamps every response with the moment it was posted (one `u64` per
//! response slot). The device serves elements in simulated-time order however the
//! host's threads are scheduled, which needs a causality rule (conservative
//! synchronisation):
//!
//! - per channel the host publishes a *promise* ([`PROMISE_NS`]): no element it stores
//!   on that channel from now on will be stamped earlier, except one that a completion
//!   it has not accounted for yet leads to;
//! - a response the host will react to carries [`STAMP_WAKES_HOST`] on its element; the
//!   device counts those it posts ([`DEVICE_WAKES`]) and the host counts those it has
//!   accounted for in its promise ([`HOST_ACKED`]);
//! - after posting such a response at time `r`, the device assumes the host may submit
//!   on that channel from `r + lookahead` ([`LOOKAHEAD_NS`], the host's fastest turnaround)
//!   until the host acknowledges it.
//!
//! The device therefore advances only up to the earliest moment any host could still
//! submit, and publishes how far it got ([`crate::layout::DEVICE_NOW_NS`]): every
//! response earlier than that is posted. Same stamps in, same device time out.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// The simulated time of one request element, written by the host beside the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestStamp {
    /// When the element reaches the channel, in simulated nanoseconds.
    pub time_ns: u64,
    /// [`STAMP_WAKES_HOST`] or 0.
    pub flags: u32,
    /// CRC-32 of the element in the same slot, as the host wrote it
    /// ([`crate::dbc::element_crc`]): the device serves no element whose copy does not
    /// match (a corrupted element fails with [`crate::dbc::CompletionCode::CorruptElement`]).
    pub crc: u32,
}
const _: () = assert!(size_of::<RequestStamp>() == 16);

/// Bytes of one request stamp.
pub const REQUEST_STAMP_BYTES: u64 = size_of::<RequestStamp>() as u64;
/// Bytes of one response stamp (its posting time, simulated nanoseconds).
pub const RESPONSE_STAMP_BYTES: u64 = 8;

/// The host reacts to this element's response (it ends an inference).
pub const STAMP_WAKES_HOST: u32 = 1;

/// Per-channel registers, inside each channel's register block (offsets from it).
/// Host-owned: the promise, simulated nanoseconds (64-bit).
pub const PROMISE_NS: u64 = 0x100;
/// Host-owned: the lookahead, simulated nanoseconds (64-bit).
pub const LOOKAHEAD_NS: u64 = 0x108;
/// Host-owned: waking responses the promise accounts for (32-bit).
pub const HOST_ACKED: u64 = 0x110;
/// Device-owned: waking responses posted since activation (32-bit).
pub const DEVICE_WAKES: u64 = 0x114;

/// No promise: the host will not submit on this channel until it says otherwise.
pub const NO_PROMISE: u64 = u64::MAX;

const NS_PER_SECOND: u128 = 1_000_000_000;

/// The first device cycle at or after `ns` on a `clock_hz` clock.
pub fn cycles_at_or_after(ns: u64, clock_hz: u64) -> u64 {
    let c = (u128::from(ns) * u128::from(clock_hz)).div_ceil(NS_PER_SECOND);
    u64::try_from(c).unwrap_or(u64::MAX)
}

/// Nanoseconds at cycle `cycles`, rounded down (a lower bound).
pub fn ns_at_or_before(cycles: u64, clock_hz: u64) -> u64 {
    let ns = u128::from(cycles) * NS_PER_SECOND / u128::from(clock_hz.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Nanoseconds at cycle `cycles`, rounded up (when something that happens at the cycle
/// is seen).
pub fn ns_at_or_after(cycles: u64, clock_hz: u64) -> u64 {
    let ns = (u128::from(cycles) * NS_PER_SECOND).div_ceil(u128::from(clock_hz.max(1)));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_the_safe_way_and_saturate() {
        let hz = 1_400_000_000;
        // 1 ns is 1.4 cycles: at or after is 2, and cycle 2 is seen at 2 ns (1.43 ns).
        assert_eq!(cycles_at_or_after(1, hz), 2);
        assert_eq!(ns_at_or_after(2, hz), 2);
        assert_eq!(ns_at_or_before(2, hz), 1);
        assert_eq!(cycles_at_or_after(1_000_000_000, hz), hz);
        for ns in [0u64, 7, 999, 123_456_789] {
            assert!(ns_at_or_before(cycles_at_or_after(ns, hz), hz) >= ns.saturating_sub(1));
            assert!(ns_at_or_after(cycles_at_or_after(ns, hz), hz) >= ns);
        }
        assert_eq!(cycles_at_or_after(u64::MAX, hz), u64::MAX);
    }
}
