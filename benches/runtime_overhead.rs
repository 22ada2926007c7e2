//! Runtime overhead per inference: enqueue + preProc + submit + wait + postProc for a
//! small tensor through the runtime, against the same work done by hand with the driver
//! API, in the same run. The device and the interrupt handler are stepped on the calling
//! thread (no thread hand-offs), so the difference is the runtime's own cost.
//! Run with `cargo bench --bench runtime_overhead`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::dbc::SemOp;
use aicsim_driver::{Device, DmaDirection, Doorbell, DoorbellWidth, SemaphoreCommand, Slice, SyncPoint};
use aicsim_kmd::{Kmd, KmdConfig, Stepping};
use aicsim_runtime::{samples, Activation, Program, Timestamps};

const BYTES: u32 = 256;

fn per_inference(n: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n as u32
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 200_000 } else { 5_000 };
    let kmd = Arc::new(Kmd::new(KmdConfig { stepping: Stepping::Manual, ..KmdConfig::default() }).unwrap());
    let device = Arc::new(Device::open(kmd.clone()));
    let program = Program::from_image(samples::null_program(BYTES)).unwrap();
    let activation = Activation::new(device.clone(), &program).unwrap();
    let step = || {
        kmd.step_device_until_idle();
        kmd.step_interrupts();
    };
    let input = vec![vec![0x5Au8; BYTES as usize]];

    // The runtime: an inference slot, timestamps, size checks, run records.
    let slot = activation.new_slot().unwrap();
    let mut outputs = vec![vec![0u8; BYTES as usize]];
    let runtime = per_inference(n, || {
        let mut ts = Timestamps::now();
        slot.write_inputs(&program, &input).unwrap();
        ts.pre_proc_end = aicsim_runtime::wall_ns();
        let seq = slot.submit(&activation, &mut ts).unwrap();
        step();
        slot.wait(&activation, &mut ts).unwrap();
        slot.read_outputs(&mut outputs).unwrap();
        ts.post_proc_end = aicsim_runtime::wall_ns();
        std::hint::black_box((ts, activation.run_record(seq)));
    });
    assert_eq!(outputs, input);

    // By hand: the same buffers, slices, execute and waits through the driver alone.
    let info = *activation.channel().activation();
    let (inb, outb) = (device.create_buffer(BYTES.into()).unwrap(), device.create_buffer(BYTES.into()).unwrap());
    inb.attach_slices(
        activation.channel(),
        DmaDirection::ToDevice,
        &[Slice {
            offset: 0,
            size: BYTES.into(),
            dev_addr: info.ddr_base,
            semaphores: vec![SemaphoreCommand {
                op: SemOp::Inc,
                index: info.sem_inputs,
                value: 1,
                at: SyncPoint::Postsync,
            }],
            doorbell: Some(Doorbell { addr: info.doorbell, data: 1, width: DoorbellWidth::Bits32 }),
        }],
    )
    .unwrap();
    outb.attach_slices(
        activation.channel(),
        DmaDirection::FromDevice,
        &[Slice {
            offset: 0,
            size: BYTES.into(),
            dev_addr: info.ddr_base + u64::from(BYTES),
            semaphores: vec![SemaphoreCommand {
                op: SemOp::P,
                index: info.sem_outputs,
                value: 0,
                at: SyncPoint::Presync,
            }],
            doorbell: None,
        }],
    )
    .unwrap();
    let mut out = vec![0u8; BYTES as usize];
    let wait = Duration::from_secs(5);
    let by_hand = per_inference(n, || {
        inb.write(0, &input[0]).unwrap();
        device
            .execute(activation.channel(), &[(&inb, DmaDirection::ToDevice), (&outb, DmaDirection::FromDevice)])
            .unwrap();
        step();
        device.wait(activation.channel(), &outb, wait).unwrap();
        device.wait(activation.channel(), &inb, wait).unwrap();
        outb.read(0, &mut out).unwrap();
    });
    assert_eq!(out, input[0]);

    // The synchronous convenience API, which also allocates its outputs.
    let sync = {
        let refs: Vec<&[u8]> = input.iter().map(Vec::as_slice).collect();
        let kmd = kmd.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // run() waits inside; a helper thread steps the device while it does.
        let stepper = std::thread::spawn(move || {
            while rx.try_recv().is_err() {
                kmd.step_device_until_idle();
                kmd.step_interrupts();
            }
        });
        let d = per_inference(n / 4, || {
            std::hint::black_box(activation.run(&refs).unwrap());
        });
        tx.send(()).unwrap();
        stepper.join().unwrap();
        d
    };

    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    println!("runtime overhead, {BYTES} B in / {BYTES} B out, device stepped on the caller's thread, {n} inferences");
    println!("  baseline: by hand with the driver API   {:>8.0} ns / inference", ns(by_hand));
    println!("  aicsim runtime (inference slot)         {:>8.0} ns / inference", ns(runtime));
    println!(
        "  runtime overhead = {:.0} ns ({:.2}x the hand-written path)",
        ns(runtime) - ns(by_hand),
        ns(runtime) / ns(by_hand)
    );
    println!("  Activation::run (sync, allocating, device stepped by a second thread): {:.0} ns / inference", ns(sync));
}
