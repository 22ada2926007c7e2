//! The response ring's hand-off between the device and the host's interrupt handler,
//! checked under loom with the very endpoints both sides use ([`Producer`] in the
//! firmware, [`Consumer`] in the kernel-driver simulator), over loom atomics instead of
//! shared-memory registers:
//!
//! - device: write a response, [`Producer::publish_and_check_idle`]; if the host had
//!   taken everything before, raise an interrupt (bump the MSI sequence);
//! - host: read the MSI sequence, drain, [`Consumer::publish_and_recheck`] and keep
//!   draining while more arrived; then sleep until the MSI sequence changes.
//!
//! The property: the host never sleeps forever with responses on the ring (no lost
//! wake-up), and it takes every response exactly once and in order.

use aicsim_abi::dbc::Ring;
use aicsim_abi::ring::{Consumer, Indices, Producer};
use loom::sync::atomic::{fence, AtomicBool, AtomicU32};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Four slots (capacity 3): the device can post while earlier responses are still
/// unconsumed (the window a lost wake-up needs), and it also has to wait for room.
const SLOTS: u32 = 4;
const RESPONSES: u32 = 4;

struct Shared {
    slots: [AtomicU32; SLOTS as usize],
    tail: AtomicU32,
    head: AtomicU32,
    msi_seq: AtomicU32,
    device_done: AtomicBool,
}

/// One endpoint's view of the two index registers.
struct LoomIndices<'a> {
    own: &'a AtomicU32,
    other: &'a AtomicU32,
}

impl Indices for LoomIndices<'_> {
    fn publish(&self, index: u32) {
        self.own.store(index, Release);
    }
    fn observe(&self) -> u32 {
        self.other.load(Acquire)
    }
    fn fence(&self) {
        fence(SeqCst);
    }
}

fn device(s: &Shared, ring: Ring) {
    serve(s, ring, false);
}

/// Posts every response; `hasty` decides whether to interrupt from a head observed
/// *before* publishing the tail (no store-fence-load), as a wrong firmware would.
fn serve(s: &Shared, ring: Ring, hasty: bool) {
    let ix = LoomIndices { own: &s.tail, other: &s.head };
    let mut producer = Producer::new(ring);
    for value in 1..=RESPONSES {
        // Wait for room: the host frees slots by publishing its head.
        while producer.room(&ix, 1).unwrap() == 0 {
            thread::yield_now();
        }
        s.slots[producer.slot() as usize].store(value, Relaxed);
        let before = producer.slot();
        producer.push();
        let wake = if hasty {
            let idle = s.head.load(Acquire) == before;
            producer.publish(&ix);
            idle
        } else {
            producer.publish_and_check_idle(&ix)
        };
        if wake {
            s.msi_seq.fetch_add(1, SeqCst);
        }
    }
    s.device_done.store(true, Release);
}

fn host(s: &Shared, ring: Ring) {
    let ix = LoomIndices { own: &s.head, other: &s.tail };
    let mut consumer = Consumer::new(ring);
    let mut next_expected = 1u32;
    loop {
        let seen = s.msi_seq.load(SeqCst);
        consumer.refresh(&ix).unwrap();
        loop {
            while consumer.pending() > 0 {
                let v = s.slots[consumer.slot() as usize].load(Relaxed);
                assert_eq!(v, next_expected, "responses arrive once, in order");
                next_expected += 1;
                consumer.pop();
            }
            if consumer.publish_and_recheck(&ix).unwrap() == 0 {
                break;
            }
        }
        if next_expected > RESPONSES {
            return;
        }
        // Sleep until an MSI. A device that has finished will never raise another one,
        // so sleeping then with responses outstanding is a lost wake-up.
        while s.msi_seq.load(SeqCst) == seen {
            assert!(
                !s.device_done.load(Acquire) || s.msi_seq.load(SeqCst) != seen,
                "lost wake-up: the host sleeps with {} responses outstanding",
                RESPONSES + 1 - next_expected
            );
            thread::yield_now();
        }
    }
}

/// Explores every interleaving (up to three preemptions) of `device` against the host.
fn check(device: fn(&Shared, Ring)) {
    let ring = Ring::new(SLOTS).unwrap();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let shared = Arc::new(Shared {
            slots: std::array::from_fn(|_| AtomicU32::new(0)),
            tail: AtomicU32::new(0),
            head: AtomicU32::new(0),
            msi_seq: AtomicU32::new(0),
            device_done: AtomicBool::new(false),
        });
        let s = shared.clone();
        let d = thread::spawn(move || device(&s, ring));
        host(&shared, ring);
        d.join().unwrap();
    });
}

#[test]
fn the_response_ring_handoff_never_loses_a_wake_up() {
    check(device);
}

fn hasty_device(s: &Shared, ring: Ring) {
    serve(s, ring, true);
}

/// The check has teeth: loom finds the lost wake-up of the hasty device.
#[test]
#[should_panic(expected = "lost wake-up")]
fn deciding_before_publishing_loses_a_wake_up() {
    check(hasty_device);
}
