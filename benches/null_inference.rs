//! Null inference (64 bytes in, 64 bytes out, nothing computed) through the whole
//! stack: runtime -> driver -> kmd -> rings -> device thread -> interrupt thread -> back.
//!
//! Measures, in one run:
//! - synchronous round-trip latency (p50, p99) of one inference at a time;
//! - the baseline: a round trip of two threads ping-ponging over crossbeam channels,
//!   measured in interleaved rounds with the synchronous figure. The machine is noisy
//!   and crossbeam's own round trip is bimodal (spinning ~0.7 us vs parked ~50 us), so
//!   aicsim's figure is the median over rounds and the baseline's is its best round:
//!   the comparison is conservative;
//! - the software path alone: the same inference with the device and interrupt handler
//!   stepped on the calling thread (no hand-offs);
//! - pipelined throughput with set size 8 and 16 (one activation) and 2 x 8.
//!
//! Targets (issue 2): pipelined >= 200,000 inferences/s; synchronous p50 <= 4x the
//! baseline round trip. Run with `cargo bench --bench null_inference`; knobs for
//! experiments: AICSIM_IRQ_POLL_US, AICSIM_DEVICE_SPIN_US, AICSIM_WAIT_BUSY_POLL=0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_driver::Device;
use aicsim_kmd::{CompletionMode, Kmd, KmdConfig, Stepping};
use aicsim_runtime::{samples, Activation, InferenceSet, Program, RunLimit, Timestamps};

const PAYLOAD: u32 = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ping_pong(samples: usize) -> Vec<Duration> {
    let (to_peer, peer_in) = crossbeam_channel::bounded::<u64>(1);
    let (peer_out, from_peer) = crossbeam_channel::bounded::<u64>(1);
    let peer = std::thread::spawn(move || {
        while let Ok(v) = peer_in.recv() {
            if peer_out.send(v + 1).is_err() {
                break;
            }
        }
    });
    let mut rtts = Vec::with_capacity(samples);
    for i in 0..(samples + samples / 10) as u64 {
        let t = Instant::now();
        to_peer.send(i).unwrap();
        assert_eq!(from_peer.recv().unwrap(), i + 1);
        if i as usize >= samples / 10 {
            rtts.push(t.elapsed());
        }
    }
    drop(to_peer);
    peer.join().unwrap();
    rtts.sort();
    rtts
}

/// One inference at a time on a pre-built slot; returns sorted round trips.
fn synchronous(activation: &Activation, program: &Program, samples: usize, step: Option<&Kmd>) -> Vec<Duration> {
    let slot = activation.new_slot().unwrap();
    let input = vec![vec![0xA5u8; PAYLOAD as usize]];
    let mut output = vec![vec![0u8; PAYLOAD as usize]];
    let mut rtts = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        let mut ts = Timestamps::at(aicsim_runtime::wall_ns_of(t));
        slot.write_inputs(program, &input).unwrap();
        slot.submit(activation, &mut ts).unwrap();
        if let Some(kmd) = step {
            kmd.step_device_until_idle();
            kmd.step_interrupts();
        }
        slot.wait(activation, &mut ts).unwrap();
        slot.read_outputs(&mut output).unwrap();
        if i >= samples / 10 {
            rtts.push(t.elapsed());
        }
    }
    assert_eq!(output[0], input[0], "the null program echoes its input");
    rtts.sort();
    rtts
}

fn pipelined(device: Arc<Device>, program: &Program, activations: usize, set_size: usize, count: u64) -> f64 {
    let set = InferenceSet::new(device, program, activations, set_size).unwrap();
    set.run(RunLimit::Count(count / 10), |_, _| {}, |_| {}).unwrap();
    let summary = set.run(RunLimit::Count(count), |_, inputs| inputs[0].fill(1), |_| {}).unwrap();
    assert_eq!(summary.inferences, count);
    count as f64 / summary.elapsed.as_secs_f64()
}

fn env_us(name: &str) -> Option<Duration> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).map(Duration::from_micros)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a short smoke version.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, samples, count) = if full { (7, 10_000, 400_000) } else { (2, 1_000, 20_000) };
    let program = Program::from_image(samples::null_program(PAYLOAD)).unwrap();
    let mut config = KmdConfig::default();
    config.irq_poll = env_us("AICSIM_IRQ_POLL_US").unwrap_or(config.irq_poll);
    config.device_idle_spin = env_us("AICSIM_DEVICE_SPIN_US").unwrap_or(config.device_idle_spin);
    config.wait_busy_poll = std::env::var("AICSIM_WAIT_BUSY_POLL").map_or(true, |v| v != "0");
    let device = Arc::new(Device::open_simulated(config).unwrap());
    let activation = Activation::new(device.clone(), &program).unwrap();

    let (mut b50, mut b99, mut s50, mut s99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let base = ping_pong(samples);
        let sync = synchronous(&activation, &program, samples, None);
        b50.push(micros(percentile(&base, 0.5)));
        b99.push(micros(percentile(&base, 0.99)));
        s50.push(micros(percentile(&sync, 0.5)));
        s99.push(micros(percentile(&sync, 0.99)));
    }
    drop(activation);

    let manual = Arc::new(Kmd::new(KmdConfig { stepping: Stepping::Manual, ..KmdConfig::default() }).unwrap());
    let manual_activation = Activation::new(Arc::new(Device::open(manual.clone())), &program).unwrap();
    let path = synchronous(&manual_activation, &program, samples * 4, Some(&manual));

    // Datapath polling mode (every 100 us, as the kernel driver's datapath_polling).
    let polling_config =
        KmdConfig { completion: CompletionMode::Polling { interval: Duration::from_micros(100) }, ..config };
    let polling = Arc::new(Device::open_simulated(polling_config).unwrap());
    let polling_activation = Activation::new(polling.clone(), &program).unwrap();
    let polled = synchronous(&polling_activation, &program, samples, None);
    drop(polling_activation);
    let polled_p8 = pipelined(polling, &program, 1, 8, count);
    // The device in its own process (aic-device on a /dev/shm region file).
    let (cross, cross_p8) = {
        let path = std::path::Path::new(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
            .join(format!("aicsim-bench-{}", std::process::id()));
        let map = aicsim_abi::layout::MemoryMap { ring_nelem: 512, host_bytes: 64 << 20, ddr_bytes: 256 << 20 };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aic-device"))
            .args(["--shm", path.to_str().unwrap(), "--host-mib", "64", "--ddr-mib", "256"])
            .spawn()
            .expect("start aic-device");
        let external = KmdConfig { device: aicsim_device::DeviceConfig { map, ..config.device }, ..config };
        let kmd = Arc::new(Kmd::attach_external(external, &path, Duration::from_secs(10)).unwrap());
        let device = Arc::new(Device::open(kmd));
        let activation = Activation::new(device.clone(), &program).unwrap();
        let sync = synchronous(&activation, &program, samples, None);
        drop(activation);
        let p8 = pipelined(device, &program, 1, 8, count);
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = std::fs::remove_file(&path);
        (sync, p8)
    };
    let p8 = pipelined(device.clone(), &program, 1, 8, count);
    let p16 = pipelined(device.clone(), &program, 1, 16, count);
    let p2x8 = pipelined(device, &program, 2, 8, count);

    if std::env::var("AICSIM_SHOW_ROUNDS").is_ok() {
        println!("baseline p50 per round: {b50:.3?}\naicsim   p50 per round: {s50:.3?}");
    }
    let best = b50.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let (b50, b99) = (b50[best], b99[best]);
    let (s50, s99) = (median(s50), median(s99));
    println!("null inference, {PAYLOAD} B in / {PAYLOAD} B out; latency over {rounds} interleaved rounds of {samples} samples");
    println!("{:<52} {:>9} {:>9}", "", "p50 us", "p99 us");
    println!("{:<52} {:>9.2} {:>9.2}", "baseline: crossbeam ping-pong round trip (best round)", b50, b99);
    println!("{:<52} {:>9.2} {:>9.2}", "aicsim: synchronous round trip (median round)", s50, s99);
    println!(
        "{:<52} {:>9.2} {:>9.2}",
        "aicsim: software path alone (manual stepping)",
        micros(percentile(&path, 0.5)),
        micros(percentile(&path, 0.99))
    );
    println!("sync p50 / baseline p50 = {:.2}x (target <= 4x)", s50 / b50);
    println!("{:<52} {:>12.0} inf/s", "aicsim: pipelined, 1 activation x S=8", p8);
    println!("{:<52} {:>12.0} inf/s", "aicsim: pipelined, 1 activation x S=16", p16);
    println!("{:<52} {:>12.0} inf/s", "aicsim: pipelined, 2 activations x S=8", p2x8);
    println!("best pipelined / target 200000 = {:.2}x", p8.max(p16).max(p2x8) / 200_000.0);
    println!(
        "{:<52} {:>9.2} {:>9.2}   pipelined 1 x S=8: {:.0} inf/s",
        "cross-process device: synchronous round trip",
        micros(percentile(&cross, 0.5)),
        micros(percentile(&cross, 0.99)),
        cross_p8
    );
    println!(
        "{:<52} {:>9.2} {:>9.2}   pipelined 1 x S=8: {:.0} inf/s",
        "polling mode (100 us): synchronous round trip",
        micros(percentile(&polled, 0.5)),
        micros(percentile(&polled, 0.99)),
        polled_p8
    );
}
