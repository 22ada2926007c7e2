//! Faults the device injects from its seeded plan, and its interrupt (MSI).

use super::*;

impl Firmware {
    /// Whether an injected fault with this rate (parts per million) happens now. A rate
    /// of zero draws nothing, so a plan without that fault leaves the others' draws as
    /// they were.
    fn fault_happens(&mut self, ppm: u32) -> bool {
        ppm > 0 && splitmix(&mut self.fault_rng) % 1_000_000 < u64::from(ppm)
    }

    /// The status a responding element completes with: a success may become an injected
    /// error completion.
    pub(super) fn inject_completion_error(&mut self, status: u16) -> u16 {
        if status == 0 && self.fault_happens(self.config.faults.error_completion_ppm) {
            CompletionCode::Injected as u16
        } else {
            status
        }
    }

    /// Counts a served element; the device hangs once the plan's count is reached, and
    /// crashes (panics) once its crash count is.
    pub(super) fn count_served_element(&mut self) {
        self.elements_done += 1;
        if let Some(n) = self.config.faults.panic_after_elements.filter(|&n| self.elements_done >= n) {
            panic!("injected firmware crash after {n} elements");
        }
        if self.config.faults.hang_after_elements.is_some_and(|n| self.elements_done >= n) {
            self.hung = true;
        }
    }

    /// How long the plan makes the device take over the control command it just took.
    pub(super) fn control_delay_ns(&mut self) -> u64 {
        let faults = self.config.faults;
        let jitter = match faults.slow_control_jitter_ns {
            0 => 0,
            j => splitmix(&mut self.fault_rng) % (j + 1),
        };
        faults.slow_control_ns + jitter
    }

    /// Whether the interrupt about to be raised is lost.
    pub(super) fn interrupt_lost(&mut self) -> bool {
        self.fault_happens(self.config.faults.lost_interrupt_ppm)
    }

    /// A corrupted-element fault flips one bit of the copy read out of the ring.
    pub(super) fn corrupt_element(&mut self, raw: &mut [u8; REQUEST_ELEMENT_BYTES as usize]) {
        if self.fault_happens(self.config.faults.corrupt_element_ppm) {
            let bit = splitmix(&mut self.fault_rng) % (REQUEST_ELEMENT_BYTES * 8);
            raw[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
    }
}

/// Raises channel `dbc`'s MSI, unless the host masked interrupts to poll.
pub(super) fn raise_msi<M: SharedMemory>(dbc: usize, mem: &M) {
    // A host that polls has masked interrupts: it finds the responses by itself.
    if mem.load_u32(layout::MSI_MASK, Acquire) != 0 {
        return;
    }
    mem.fetch_or_u32(layout::MSI_PENDING, 1 << dbc, SeqCst);
    mem.fetch_add_u32(layout::MSI_SEQ, 1, SeqCst);
    fence(SeqCst);
    // The fence pairs with the host's after its store of HOST_IRQ_SLEEPING, before its last check of
    // MSI_SEQ: either it sees our increment or we see it asleep.
    if mem.load_u32(layout::HOST_IRQ_SLEEPING, Acquire) != 0 {
        mem.wake(layout::MSI_SEQ);
    }
}
