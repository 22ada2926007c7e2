//! Interrupt mode and datapath polling mode both deliver every completion; polling mode
//! raises no interrupt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aicsim_device::DeviceConfig;
use aicsim_kmd::{CompletionMode, Kmd, KmdConfig};

fn run(completion: CompletionMode) -> u32 {
    let config = KmdConfig {
        device: DeviceConfig {
            map: aicsim_abi::layout::MemoryMap { ring_nelem: 64, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
            ..DeviceConfig::default()
        },
        completion,
        // Delivery must come from the interrupt thread or the poller, not the waiter.
        wait_busy_poll: false,
        ..KmdConfig::default()
    };
    let kmd = Arc::new(Kmd::new(config).unwrap());
    let client = kmd.open();
    let (dbc, input, output) = common::setup(&client);
    for i in 0..300u32 {
        let data: Vec<u8> = (0..64).map(|k| (k as u32 * 3 + i) as u8).collect();
        client.mmap_bo(input).unwrap().write(0, &data).unwrap();
        client.execute_bo(dbc, &common::both(input, output)).unwrap();
        client.wait_bo(output, 2000, dbc).unwrap();
        client.wait_bo(input, 2000, dbc).unwrap();
        let mut out = vec![0u8; 64];
        client.mmap_bo(output).unwrap().read(0, &mut out).unwrap();
        assert_eq!(out, data, "inference {i}");
    }
    kmd.msi_count()
}

#[test]
fn interrupt_mode_delivers_through_msis() {
    assert!(run(CompletionMode::Interrupt) > 0);
}

#[test]
fn polling_mode_delivers_without_any_interrupt() {
    assert_eq!(run(CompletionMode::Polling { interval: Duration::from_micros(100) }), 0);
}
