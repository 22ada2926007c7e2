//! A loom model of the response-ring handoff between the device and the host's
//! interrupt handler, with the orderings the real code uses:
//!
//! - device (`Firmware::service_channel`, `raise_msi`): write the response, store the
//!   tail (Release), SeqCst fence, load the host's head; if it equals the tail before
//!   this batch the ring was empty: raise an MSI (bump the MSI sequence);
//! - host (`HostChannel::drain`, the interrupt thread): read the MSI sequence, drain
//!   from head to tail (Acquire), store the head (Release), SeqCst fence, re-check the
//!   tail and keep draining if it moved; then sleep until the MSI sequence changes.
//!
//! The property: the host never sleeps forever with responses on the ring (no lost
//! wake-up), and it consumes every response exactly once and in order.

use loom::sync::atomic::{fence, AtomicBool, AtomicU32};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};

/// Ring of 3 slots (capacity 2): the device can post while an earlier response is still
/// unconsumed (the window a lost wake-up needs), and it also has to wait for room.
const SLOTS: u32 = 3;
const RESPONSES: u32 = 3;

struct Ring {
    slots: [AtomicU32; SLOTS as usize],
    tail: AtomicU32,
    head: AtomicU32,
    msi_seq: AtomicU32,
    device_done: AtomicBool,
}

fn device(r: &Ring) {
    let mut tail = 0u32;
    for value in 1..=RESPONSES {
        // Wait for room: the host frees slots by storing its head.
        while (tail + 1) % SLOTS == r.head.load(Acquire) {
            thread::yield_now();
        }
        let before = tail;
        r.slots[tail as usize].store(value, std::sync::atomic::Ordering::Relaxed);
        tail = (tail + 1) % SLOTS;
        r.tail.store(tail, Release);
        fence(SeqCst);
        if r.head.load(Acquire) == before {
            r.msi_seq.fetch_add(1, SeqCst);
        }
    }
    r.device_done.store(true, Release);
}

fn host(r: &Ring) {
    let mut head = 0u32;
    let mut next_expected = 1u32;
    loop {
        let seen = r.msi_seq.load(SeqCst);
        // Drain, publish the head, re-check after the fence.
        let mut tail = r.tail.load(Acquire);
        loop {
            while head != tail {
                let v = r.slots[head as usize].load(std::sync::atomic::Ordering::Relaxed);
                assert_eq!(v, next_expected, "responses arrive once, in order");
                next_expected += 1;
                head = (head + 1) % SLOTS;
            }
            r.head.store(head, Release);
            fence(SeqCst);
            tail = r.tail.load(Acquire);
            if tail == head {
                break;
            }
        }
        if next_expected > RESPONSES {
            return;
        }
        // Sleep until an MSI. A device that has finished will never raise another one,
        // so sleeping then with responses outstanding is a lost wake-up.
        while r.msi_seq.load(SeqCst) == seen {
            assert!(
                !r.device_done.load(Acquire) || r.msi_seq.load(SeqCst) != seen,
                "lost wake-up: the host sleeps with {} responses outstanding",
                RESPONSES + 1 - next_expected
            );
            thread::yield_now();
        }
    }
}

#[test]
fn the_response_ring_handoff_never_loses_a_wake_up() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let ring = Arc::new(Ring {
            slots: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            tail: AtomicU32::new(0),
            head: AtomicU32::new(0),
            msi_seq: AtomicU32::new(0),
            device_done: AtomicBool::new(false),
        });
        let r = ring.clone();
        let d = thread::spawn(move || device(&r));
        host(&ring);
        d.join().unwrap();
    });
}
