//! A fault campaign: inferences through the whole driver stack (uAPI, rings, device
//! firmware, interrupts) while a seeded mix of every fault the simulator has is
//! injected, with exactly-once accounting — each inference completes once with its own
//! correct output, or fails once with a named error; none is lost, duplicated or
//! corrupted.
//!
//! Faults: error completions, lost interrupts and corrupted elements (the device's seeded
//! plan), device hangs (the plan hangs the device after a number of elements; a watchdog
//! resets it), subsystem restarts, full resets and link-down episodes (a seeded
//! controller at progress points), and — in a second phase, with the device in its own
//! process (`aic-device`) — the device process killed with SIGKILL and restarted.
//!
//! `cargo bench --bench fault_campaign` runs 10,000,000 inferences;
//! `-- --inferences N` another number; `cargo test --benches` a short smoke run.
//! Figures go to docs/reliability.md.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::container::IoDType;
use aicsim_abi::dbc::CompletionCode;
use aicsim_abi::layout::MemoryMap;
use aicsim_device::{DeviceConfig, FaultPlan};
use aicsim_kmd::uapi::{AttachSliceEntry, ExecuteEntry, Sem, DIR_FROM_DEVICE, DIR_TO_DEVICE};
use aicsim_kmd::{Client, Errno, Kmd, KmdConfig, KmdError};

const BYTES: u64 = 64;
const WORKERS: usize = 3;
const PAIRS: usize = 4;

fn map() -> MemoryMap {
    MemoryMap { ring_nelem: 64, host_bytes: 16 << 20, ddr_bytes: 64 << 20 }
}

/// The device's own faults; it hangs once it has served `hang_after` elements since its
/// last boot (so a run of that long without a reset ends in a hang).
fn plan(seed: u64, hang_after: u64) -> FaultPlan {
    FaultPlan {
        seed,
        error_completion_ppm: 300,
        lost_interrupt_ppm: 2_000,
        corrupt_element_ppm: 40,
        hang_after_elements: Some(hang_after),
        ..FaultPlan::default()
    }
}

fn config(seed: u64, hang_after: u64) -> KmdConfig {
    KmdConfig {
        device: DeviceConfig { num_nsp: 4, map: map(), faults: plan(seed, hang_after), ..DeviceConfig::default() },
        control_timeout: Duration::from_millis(200),
        irq_watchdog: Duration::from_millis(5),
        ..KmdConfig::default()
    }
}

fn payload(global: u64) -> Vec<u8> {
    let mut x = global.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How each inference ended: exactly one outcome each.
struct Ledger {
    outcome: Vec<AtomicU8>,
    ok: AtomicU64,
    corrupted: AtomicU64,
    duplicated: AtomicU64,
    failed: [AtomicU64; 6],
    injected: AtomicU64,
    recoveries: AtomicU64,
    done: AtomicU64,
}

/// The named errors an inference may fail with.
const FAILURES: [&str; 6] = [
    "EIO (a device error)",
    "ETIMEDOUT (a wedged channel or a hung device)",
    "ENODEV (a reset, the link, the device process)",
    "EPIPE (a subsystem restart)",
    "EPERM (the channel released under it)",
    "anything else",
];

impl Ledger {
    fn new(n: u64) -> Ledger {
        Ledger {
            outcome: (0..n).map(|_| AtomicU8::new(0)).collect(),
            ok: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            failed: Default::default(),
            injected: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    fn settle(&self, global: u64, result: Result<bool, &KmdError>) {
        if self.outcome[global as usize].fetch_add(1, SeqCst) != 0 {
            self.duplicated.fetch_add(1, Relaxed);
        }
        match result {
            Ok(true) => self.ok.fetch_add(1, Relaxed),
            Ok(false) => self.corrupted.fetch_add(1, Relaxed),
            Err(e) => {
                if e.device_code == Some(CompletionCode::Injected) {
                    self.injected.fetch_add(1, Relaxed);
                }
                let k = match e.errno {
                    Errno::EIO => 0,
                    Errno::ETIMEDOUT => 1,
                    Errno::ENODEV => 2,
                    Errno::EPIPE => 3,
                    Errno::EPERM => 4,
                    _ => 5,
                };
                self.failed[k].fetch_add(1, Relaxed)
            }
        };
        self.done.fetch_add(1, Relaxed);
    }
}

/// One user: the copy program on a channel of its own, with a few buffer pairs.
struct Worker {
    client: Client,
    dbc: u32,
    pairs: Vec<(u32, u32)>,
}

impl Worker {
    /// Loads, activates and slices from scratch; retries while the device is away.
    fn start(kmd: &Arc<Kmd>, stop: &AtomicBool) -> Option<Worker> {
        let client = kmd.open();
        let image = aicsim_abi::programs::copy_program("copy", IoDType::U8, &[BYTES as u32]).to_bytes();
        loop {
            if stop.load(Relaxed) {
                return None;
            }
            if let Ok(w) = Worker::try_start(&client, &image) {
                return Some(Worker { client, dbc: w.0, pairs: w.1 });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn try_start(client: &Client, image: &[u8]) -> aicsim_kmd::Result<(u32, Vec<(u32, u32)>)> {
        let program = client.load_program(image)?;
        let (dbc, info) = client.activate(program)?;
        let mut pairs = Vec::new();
        for _ in 0..PAIRS {
            let (input, output) = (client.create_bo(BYTES)?, client.create_bo(BYTES)?);
            let mut i = AttachSliceEntry {
                size: BYTES,
                dev_addr: info.ddr_base,
                db_addr: info.doorbell,
                db_data: 1,
                db_len: 32,
                ..Default::default()
            };
            i.sems[0] = Sem { val: 1, index: info.sem_inputs, cmd: 2, ..Default::default() };
            let mut o = AttachSliceEntry { size: BYTES, dev_addr: info.ddr_base + BYTES, ..Default::default() };
            o.sems[0] = Sem { index: info.sem_outputs, presync: 1, cmd: 6, ..Default::default() };
            client.attach_slice_bo(input, dbc, DIR_TO_DEVICE, &[i])?;
            client.attach_slice_bo(output, dbc, DIR_FROM_DEVICE, &[o])?;
            pairs.push((input, output));
        }
        Ok((dbc, pairs))
    }

    /// One inference on pair `p`: its named error, or whether the output is its own.
    fn infer(&self, p: usize, data: &[u8]) -> Result<bool, KmdError> {
        let (input, output) = self.pairs[p];
        self.client.mmap_bo(input)?.write(0, data)?;
        self.client.mmap_bo(output)?.write(0, &[0xEE; BYTES as usize])?;
        let both =
            [ExecuteEntry { handle: input, dir: DIR_TO_DEVICE }, ExecuteEntry { handle: output, dir: DIR_FROM_DEVICE }];
        self.client.execute_bo(self.dbc, &both)?;
        let waited = self.client.wait_bo(output, 50, self.dbc);
        let input_done = self.client.wait_bo(input, 50, self.dbc);
        waited?;
        input_done?;
        let mut out = vec![0u8; BYTES as usize];
        self.client.mmap_bo(output)?.read(0, &mut out)?;
        Ok(out == data)
    }
}

/// Runs inferences `[first, first + n)` on `kmd` with the workers, while `events` runs
/// on its own thread and injects faults; returns when every inference has an outcome.
fn phase(kmd: &Arc<Kmd>, ledger: &Ledger, first: u64, n: u64, events: impl FnOnce(&AtomicBool) + Send) {
    let next = AtomicU64::new(first);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let controller = scope.spawn(|| events(&stop));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    let Some(mut worker) = Worker::start(kmd, &stop) else { return };
                    let mut p = 0;
                    loop {
                        let global = next.fetch_add(1, Relaxed);
                        if global >= first + n {
                            break;
                        }
                        let result = worker.infer(p, &payload(global));
                        p = (p + 1) % PAIRS;
                        ledger.settle(global, result.as_ref().map(|&ok| ok));
                        if result.is_err() {
                            // The channel's state is unknown after a failure: start over.
                            ledger.recoveries.fetch_add(1, Relaxed);
                            drop(worker);
                            let Some(w) = Worker::start(kmd, &stop) else { return };
                            worker = w;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, SeqCst);
        controller.join().unwrap();
    });
}

/// Fault counts by kind.
#[derive(Default)]
struct Injected {
    ssr: u64,
    resets: u64,
    link_downs: u64,
    hang_resets: u64,
    kills: u64,
}

/// The in-process controller: at seeded progress points a subsystem restart, a reset or
/// a link-down episode; and a watchdog that resets a hung device.
fn controller(kmd: &Kmd, ledger: &Ledger, n: u64, seed: u64, stop: &AtomicBool) -> Injected {
    let mut got = Injected::default();
    let mut state = seed | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let step = (n / 400).max(50);
    let mut next_event = step;
    let (mut last_done, mut last_move) = (0, Instant::now());
    while !stop.load(SeqCst) {
        std::thread::sleep(Duration::from_micros(500));
        let done = ledger.done.load(Relaxed);
        if done != last_done {
            (last_done, last_move) = (done, Instant::now());
        } else if last_move.elapsed() > Duration::from_millis(300) {
            // Nothing finished for 300 ms: the device hung.
            if kmd.reset().is_ok() {
                got.hang_resets += 1;
            }
            last_move = Instant::now();
        }
        if done < next_event {
            continue;
        }
        next_event = done + step / 2 + rand() % step;
        match rand() % 10 {
            0..=4 => {
                let dbc = (rand() % WORKERS as u64) as u32;
                if kmd.subsystem_restart(dbc).is_ok() {
                    got.ssr += 1;
                }
            }
            5 | 6 => got.resets += u64::from(kmd.reset().is_ok()),
            7 | 8 => {
                let _ = kmd.set_link(false);
                std::thread::sleep(Duration::from_millis(2));
                // A link that comes back settles its channels; if the device does not
                // confirm, a reset clears them.
                if kmd.set_link(true).is_err() {
                    let _ = kmd.reset();
                }
                got.link_downs += 1;
            }
            _ => {}
        }
    }
    got
}

struct DeviceProcess(Child);

impl DeviceProcess {
    fn start(path: &std::path::Path) -> DeviceProcess {
        let m = map();
        let child = Command::new(env!("CARGO_BIN_EXE_aic-device"))
            .args(["--shm", path.to_str().unwrap(), "--num-nsp", "4", "--ring-nelem", &m.ring_nelem.to_string()])
            .args(["--host-mib", &(m.host_bytes >> 20).to_string(), "--ddr-mib", &(m.ddr_bytes >> 20).to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("start aic-device");
        DeviceProcess(child)
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let total: u64 = args
        .iter()
        .position(|a| a == "--inferences")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 20_000 });
    let seed = 2026;
    let ledger = Ledger::new(total);
    let start = Instant::now();

    // Phase 1, nine tenths: the device in-process, every fault but the process kill.
    let in_process = total - total / 10;
    let hang_after = (total / 25).max(2_001);
    let kmd = Arc::new(Kmd::new(config(seed, hang_after)).expect("device boots"));
    let mut injected = Injected::default();
    phase(&kmd, &ledger, 0, in_process, |stop| injected = controller(&kmd, &ledger, in_process, seed, stop));
    let (lost_irqs, corrupt, iommu) = (kmd.msi_lost(), kmd.corrupt_elements(), kmd.iommu_faults());
    let misrouted: u64 = (0..16).map(|d| kmd.misrouted_responses(d)).sum();
    let spurious: u64 = (0..16).map(|d| kmd.spurious_responses(d)).sum();
    drop(kmd);

    // Phase 2: the device in its own process, killed with SIGKILL and restarted.
    let path = std::env::temp_dir().join(format!("aicsim-campaign-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut device = DeviceProcess::start(&path);
    let base = config(seed, hang_after);
    let config = KmdConfig { device: DeviceConfig { faults: FaultPlan::default(), ..base.device }, ..base };
    let kmd = Arc::new(Kmd::attach_external(config, &path, Duration::from_secs(10)).expect("attach to aic-device"));
    let rest = total - in_process;
    let kills = std::sync::Mutex::new(0u64);
    phase(&kmd, &ledger, in_process, rest, |stop| {
        let step = (rest / 8).max(50);
        let mut next = in_process + step;
        while !stop.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
            if ledger.done.load(Relaxed) < next || stop.load(SeqCst) {
                continue;
            }
            next += step;
            let _ = device.0.kill();
            let _ = device.0.wait();
            device = DeviceProcess::start(&path);
            if kmd.reattach(Duration::from_secs(10)).is_ok() {
                *kills.lock().unwrap() += 1;
            }
        }
    });
    injected.kills = *kills.lock().unwrap();
    drop(kmd);
    drop(device);
    let _ = std::fs::remove_file(&path);

    let took = start.elapsed();
    let lost = ledger.outcome.iter().filter(|o| o.load(SeqCst) == 0).count() as u64;
    let duplicated = ledger.duplicated.load(SeqCst);
    let corrupted = ledger.corrupted.load(SeqCst);
    let ok = ledger.ok.load(SeqCst);
    println!(
        "fault campaign: {total} inferences in {:.1} s ({:.0} inf/s)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    println!("  completed with their own output: {ok}");
    for (k, name) in FAILURES.iter().enumerate() {
        println!("  failed with {name}: {}", ledger.failed[k].load(SeqCst));
    }
    println!(
        "  faults: {} injected error completions, {lost_irqs} lost interrupts, {corrupt} corrupted elements (caught by CRC), \
         {misrouted} misrouted responses, {iommu} IOMMU faults, {} hangs (watchdog resets), {} subsystem restarts, \
         {} resets, {} link-down episodes, {} device process kills",
        ledger.injected.load(SeqCst),
        injected.hang_resets,
        injected.ssr,
        injected.resets,
        injected.link_downs,
        injected.kills
    );
    println!("  recovered: {} re-activations; spurious responses {spurious}", ledger.recoveries.load(SeqCst));
    println!("  lost {lost}, duplicated {duplicated}, corrupted {corrupted}");
    let failed_total: u64 = ledger.failed.iter().map(|f| f.load(SeqCst)).sum();
    assert_eq!((lost, duplicated, corrupted), (0, 0, 0), "exactly once, with its own output");
    assert_eq!(ok + failed_total, total);
    assert_eq!(ledger.failed[5].load(SeqCst), 0, "every failure is one of the named errors");
    if total >= 100_000 {
        assert!(injected.ssr > 0 && injected.resets > 0 && injected.link_downs > 0, "every controller fault happened");
        assert!(injected.kills > 0 && lost_irqs > 0 && corrupt > 0 && ledger.injected.load(SeqCst) > 0);
    }
}
