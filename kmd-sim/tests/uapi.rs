//! The uAPI's answers, through the real driver and device: errors for bad arguments,
//! device error completions, and the perf figures of finished buffers.

mod common;

use aicsim_abi::dbc::CompletionCode;
use aicsim_kmd::uapi::{AttachSliceEntry, ExecuteEntry, Sem, DIR_FROM_DEVICE, DIR_TO_DEVICE};
use aicsim_kmd::{Errno, Stepping};

fn to_device(size: u64, dev_addr: u64) -> AttachSliceEntry {
    AttachSliceEntry { size, dev_addr, ..Default::default() }
}

/// The copy program activated on a channel, and a 64-byte buffer sliced to its input.
fn copy_input_buffer(client: &aicsim_kmd::Client) -> (u32, u32) {
    let program = client.load_program(&common::copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let bo = client.create_bo(64).unwrap();
    client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[to_device(64, info.ddr_base)]).unwrap();
    (dbc, bo)
}

#[test]
fn a_bad_element_fails_its_buffer_with_the_device_code_and_the_channel_keeps_serving() {
    let kmd = common::small_kmd(16, Stepping::Threads, 0);
    let client = kmd.open();
    let program = client.load_program(&common::copy_program(256)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let bad = client.create_bo(256).unwrap();
    // The driver cannot know the device's DDR bounds; the device checks them.
    client.attach_slice_bo(bad, dbc, DIR_TO_DEVICE, &[to_device(256, info.ddr_base + info.ddr_bytes)]).unwrap();
    let good = client.create_bo(256).unwrap();
    client.attach_slice_bo(good, dbc, DIR_TO_DEVICE, &[to_device(256, info.ddr_base)]).unwrap();
    let back = client.create_bo(256).unwrap();
    client
        .attach_slice_bo(
            back,
            dbc,
            DIR_FROM_DEVICE,
            &[AttachSliceEntry { size: 256, dev_addr: info.ddr_base, ..Default::default() }],
        )
        .unwrap();
    let data: Vec<u8> = (0..=255).collect();
    client.mmap_bo(good).unwrap().write(0, &data).unwrap();

    client.execute_bo(dbc, &[ExecuteEntry { handle: bad, dir: DIR_TO_DEVICE }]).unwrap();
    let err = client.wait_bo(bad, 2000, dbc).unwrap_err();
    assert_eq!(err.errno, Errno::EIO);
    assert_eq!(err.device_code, Some(CompletionCode::DeviceAddressOutOfRange));
    assert!(err.detail.contains("outside device DDR"), "{}", err.detail);

    client
        .execute_bo(
            dbc,
            &[ExecuteEntry { handle: good, dir: DIR_TO_DEVICE }, ExecuteEntry { handle: back, dir: DIR_FROM_DEVICE }],
        )
        .unwrap();
    client.wait_bo(good, 2000, dbc).unwrap();
    client.wait_bo(back, 2000, dbc).unwrap();
    let mut out = vec![0u8; 256];
    client.mmap_bo(back).unwrap().read(0, &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn argument_errors_carry_the_real_errno() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let client = kmd.open();
    let other = kmd.open();
    let program = client.load_program(&common::copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let bo = client.create_bo(64).unwrap();
    let slice = to_device(64, info.ddr_base);
    let errno = |r: aicsim_kmd::Result<()>| r.unwrap_err().errno;

    assert_eq!(client.create_bo(0).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(client.create_bo(1 << 40).unwrap_err().errno, Errno::ENOMEM);
    assert_eq!(errno(client.attach_slice_bo(999, dbc, DIR_TO_DEVICE, &[slice])), Errno::ENOENT);
    assert_eq!(errno(client.attach_slice_bo(bo, 16, DIR_TO_DEVICE, &[slice])), Errno::EINVAL);
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, 3, &[slice])), Errno::EINVAL);
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[to_device(0, info.ddr_base)])), Errno::EINVAL);
    let past_end = AttachSliceEntry { offset: 4000, size: 200, ..slice };
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[past_end])), Errno::EINVAL);
    let sem = |presync, cmd, val, index| Sem { presync, cmd, val, index, ..Default::default() };
    let two_presync =
        AttachSliceEntry { sems: [sem(1, 2, 1, 0), sem(1, 2, 1, 1), Sem::default(), Sem::default()], ..slice };
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[two_presync])), Errno::EINVAL);
    for bad in [sem(0, 7, 1, 0), sem(0, 2, 4096, 0), sem(0, 2, 1, 32)] {
        let s = AttachSliceEntry { sems: [bad, Sem::default(), Sem::default(), Sem::default()], ..slice };
        assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[s])), Errno::EINVAL, "{bad:?}");
    }
    let padded = AttachSliceEntry {
        sems: [Sem { pad: 1, ..sem(0, 2, 1, 0) }, Sem::default(), Sem::default(), Sem::default()],
        ..slice
    };
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[padded])), Errno::EINVAL);
    assert_eq!(
        errno(client.attach_slice_bo(
            bo,
            dbc,
            DIR_TO_DEVICE,
            &[AttachSliceEntry { db_len: 12, db_addr: 0x1000, ..slice }]
        )),
        Errno::EINVAL
    );
    assert_eq!(
        errno(client.attach_slice_bo(
            bo,
            dbc,
            DIR_TO_DEVICE,
            &[AttachSliceEntry { db_len: 32, db_addr: 0x1002, ..slice }]
        )),
        Errno::EINVAL
    );
    let many: Vec<AttachSliceEntry> = (0..8).map(|i| AttachSliceEntry { offset: i * 8, size: 8, ..slice }).collect();
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &many)), Errno::ENOSPC);

    // Another user may not use this user's channel, nor see its buffers.
    let theirs = other.create_bo(64).unwrap();
    assert_eq!(errno(other.attach_slice_bo(theirs, dbc, DIR_TO_DEVICE, &[slice])), Errno::EPERM);
    assert_eq!(errno(other.execute_bo(dbc, &[ExecuteEntry { handle: theirs, dir: DIR_TO_DEVICE }])), Errno::EPERM);
    assert_eq!(errno(other.wait_bo(bo, 1, dbc)), Errno::ENOENT);

    client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[slice]).unwrap();
    assert_eq!(errno(client.attach_slice_bo(bo, dbc, DIR_TO_DEVICE, &[slice])), Errno::EINVAL, "already sliced");
    assert_eq!(errno(client.wait_bo(bo, 5, dbc)), Errno::ETIMEDOUT, "never executed");
    assert_eq!(
        errno(client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_FROM_DEVICE }])),
        Errno::EINVAL,
        "wrong direction"
    );
    client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_TO_DEVICE }]).unwrap();
    assert_eq!(
        errno(client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_TO_DEVICE }])),
        Errno::EINVAL,
        "already queued"
    );
    assert_eq!(errno(client.detach_slice_bo(bo)), Errno::EBUSY);
    assert_eq!(errno(client.wait_bo(bo, 5, dbc)), Errno::ETIMEDOUT, "device not stepped");
    kmd.step_device();
    kmd.step_interrupts();
    client.wait_bo(bo, 5, dbc).unwrap();
    client.detach_slice_bo(bo).unwrap();
    assert_eq!(errno(client.detach_slice_bo(bo)), Errno::EINVAL, "not sliced");
}

#[test]
fn perf_stats_report_queue_level_and_elements() {
    let kmd = common::small_kmd(16, Stepping::Manual, 0);
    let client = kmd.open();
    let program = client.load_program(&common::copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let a = client.create_bo(4096).unwrap();
    let b = client.create_bo(64).unwrap();
    let slices: Vec<AttachSliceEntry> = (0..3)
        .map(|i| AttachSliceEntry { offset: i * 16, size: 16, dev_addr: info.ddr_base, ..Default::default() })
        .collect();
    client.attach_slice_bo(a, dbc, DIR_TO_DEVICE, &slices).unwrap();
    client.attach_slice_bo(b, dbc, DIR_TO_DEVICE, &[to_device(64, info.ddr_base)]).unwrap();
    assert_eq!(client.perf_stats_bo(dbc, &[a]).unwrap_err().errno, Errno::EINVAL, "no finished execution yet");
    client.execute_bo(dbc, &[ExecuteEntry { handle: a, dir: DIR_TO_DEVICE }]).unwrap();
    client.execute_bo(dbc, &[ExecuteEntry { handle: b, dir: DIR_TO_DEVICE }]).unwrap();
    kmd.step_device();
    kmd.step_interrupts();
    let stats = client.perf_stats_bo(dbc, &[a, b]).unwrap();
    assert_eq!((stats[0].queue_level_before, stats[0].num_queue_element), (0, 3));
    assert_eq!((stats[1].queue_level_before, stats[1].num_queue_element), (3, 1));
}

#[test]
fn a_channel_torn_down_under_a_waiter_fails_it_with_eperm() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let client = kmd.open();
    let (dbc, bo) = copy_input_buffer(&client);
    client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_TO_DEVICE }]).unwrap();
    client.deactivate(dbc).unwrap();
    assert_eq!(client.wait_bo(bo, 100, dbc).unwrap_err().errno, Errno::EPERM);
    assert_eq!(
        client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_TO_DEVICE }]).unwrap_err().errno,
        Errno::EPERM
    );
}

#[test]
fn partial_execute_moves_only_the_first_resize_bytes() {
    use aicsim_kmd::uapi::PartialExecuteEntry;
    let kmd = common::small_kmd(16, Stepping::Manual, 0);
    let client = kmd.open();
    let program = client.load_program(&common::copy_program(256)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let a = client.create_bo(256).unwrap();
    let halves: Vec<AttachSliceEntry> = (0..2)
        .map(|i| AttachSliceEntry {
            offset: i * 128,
            size: 128,
            dev_addr: info.ddr_base + i * 128,
            ..Default::default()
        })
        .collect();
    client.attach_slice_bo(a, dbc, DIR_TO_DEVICE, &halves).unwrap();
    let b = client.create_bo(256).unwrap();
    client
        .attach_slice_bo(
            b,
            dbc,
            DIR_FROM_DEVICE,
            &[AttachSliceEntry { size: 256, dev_addr: info.ddr_base, ..Default::default() }],
        )
        .unwrap();
    let run = |entries: &dyn Fn() -> aicsim_kmd::Result<()>| {
        entries().unwrap();
        kmd.step_device_until_idle();
        kmd.step_interrupts();
    };
    let read_back = || {
        run(&|| client.execute_bo(dbc, &[ExecuteEntry { handle: b, dir: DIR_FROM_DEVICE }]));
        client.wait_bo(b, 10, dbc).unwrap();
        let mut out = vec![0u8; 256];
        client.mmap_bo(b).unwrap().read(0, &mut out).unwrap();
        out
    };
    client.mmap_bo(a).unwrap().write(0, &[0xAA; 256]).unwrap();
    run(&|| client.execute_bo(dbc, &[ExecuteEntry { handle: a, dir: DIR_TO_DEVICE }]));
    client.wait_bo(a, 10, dbc).unwrap();
    assert_eq!(read_back(), vec![0xAA; 256]);

    // 200 bytes: the first slice whole, the second cut to 72 bytes.
    client.mmap_bo(a).unwrap().write(0, &[0x55; 256]).unwrap();
    run(&|| client.partial_execute_bo(dbc, &[PartialExecuteEntry { handle: a, dir: DIR_TO_DEVICE, resize: 200 }]));
    client.wait_bo(a, 10, dbc).unwrap();
    assert_eq!(client.perf_stats_bo(dbc, &[a]).unwrap()[0].num_queue_element, 2);
    let out = read_back();
    assert_eq!(&out[..200], &[0x55; 200][..]);
    assert_eq!(&out[200..], &[0xAA; 56][..]);

    // 100 bytes: the second slice is dropped entirely; the buffer still completes.
    client.mmap_bo(a).unwrap().write(0, &[0x11; 256]).unwrap();
    run(&|| client.partial_execute_bo(dbc, &[PartialExecuteEntry { handle: a, dir: DIR_TO_DEVICE, resize: 100 }]));
    client.wait_bo(a, 10, dbc).unwrap();
    assert_eq!(client.perf_stats_bo(dbc, &[a]).unwrap()[0].num_queue_element, 1);
    let out = read_back();
    assert_eq!((&out[..100], &out[100..200]), (&[0x11; 100][..], &[0x55; 100][..]));

    for resize in [0, 4097] {
        let err = client
            .partial_execute_bo(dbc, &[PartialExecuteEntry { handle: a, dir: DIR_TO_DEVICE, resize }])
            .unwrap_err();
        assert_eq!(err.errno, Errno::EINVAL, "resize {resize}");
    }
    assert_eq!(kmd.spurious_responses(dbc as usize), 0);
}

/// Memory one client frees never reaches another with its old bytes: a buffer object is
/// created zeroed, even where the last owner's extent was.
#[test]
fn a_new_buffer_is_zeroed_even_over_another_clients_freed_bytes() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let (first, second) = (kmd.open(), kmd.open());
    let secret = vec![0x5Au8; 8192];
    let bo = first.create_bo(8192).unwrap();
    first.mmap_bo(bo).unwrap().write(0, &secret).unwrap();
    first.free_bo(bo).unwrap();
    let reused = second.create_bo(8192).unwrap();
    let mut seen = vec![0xFFu8; 8192];
    second.mmap_bo(reused).unwrap().read(0, &mut seen).unwrap();
    assert!(seen.iter().all(|&b| b == 0), "the new buffer holds the old owner's bytes");
}

/// A program belongs to the client that loaded it: another may neither activate nor
/// unload it, and an id nobody loaded is unknown.
#[test]
fn another_clients_program_can_be_neither_activated_nor_unloaded() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let (owner, other) = (kmd.open(), kmd.open());
    let program = owner.load_program(&common::copy_program(64)).unwrap();
    assert_eq!(other.activate(program).unwrap_err().errno, Errno::EPERM);
    assert_eq!(other.unload_program(program).unwrap_err().errno, Errno::EPERM);
    assert_eq!(other.activate(program + 100).unwrap_err().errno, Errno::ENOENT);
    let (dbc, _) = owner.activate(program).unwrap();
    owner.deactivate(dbc).unwrap();
    owner.unload_program(program).unwrap();
    assert_eq!(owner.activate(program).unwrap_err().errno, Errno::ENOENT, "unloaded");
}

/// A queued buffer's bytes are the device's: mapping reads and writes are EBUSY until the
/// execution completes, then work again.
#[test]
fn a_queued_buffer_cannot_be_read_or_written_until_it_completes() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let client = kmd.open();
    let (dbc, bo) = copy_input_buffer(&client);
    let map = client.mmap_bo(bo).unwrap();
    map.write(0, &[7u8; 64]).unwrap();
    client.execute_bo(dbc, &[ExecuteEntry { handle: bo, dir: DIR_TO_DEVICE }]).unwrap();
    assert_eq!(map.write(0, &[9u8; 64]).unwrap_err().errno, Errno::EBUSY);
    assert_eq!(map.read(0, &mut [0u8; 64]).unwrap_err().errno, Errno::EBUSY);
    kmd.step_device_until_idle();
    kmd.step_interrupts();
    client.wait_bo(bo, 1000, dbc).unwrap();
    let mut back = [0u8; 64];
    map.read(0, &mut back).unwrap();
    assert_eq!(back, [7u8; 64], "the queued bytes were not changed");
    map.write(0, &[9u8; 64]).unwrap();
}

/// A program id is never handed out twice: after an unload, or a reset that forgets every
/// program, a stale id names nothing (ENOENT) even when the device reuses its own id for
/// the next program, so dropping a stale handle cannot unload a newer program.
#[test]
fn a_stale_program_id_names_nothing_after_an_unload_or_a_reset() {
    let kmd = common::small_kmd(8, Stepping::Manual, 0);
    let client = kmd.open();
    let first = client.load_program(&common::copy_program(64)).unwrap();
    client.unload_program(first).unwrap();
    let second = client.load_program(&common::copy_program(64)).unwrap();
    assert_ne!(first, second, "the device reused its id; the driver's must differ");
    assert_eq!(client.unload_program(first).unwrap_err().errno, Errno::ENOENT);
    kmd.reset().unwrap();
    let third = client.load_program(&common::copy_program(64)).unwrap();
    assert!(third != first && third != second);
    assert_eq!(client.unload_program(second).unwrap_err().errno, Errno::ENOENT, "forgotten by the reset");
    let (dbc, _) = client.activate(third).unwrap();
    client.deactivate(dbc).unwrap();
    client.unload_program(third).unwrap();
}

/// The IOMMU: each channel reaches its user's buffers, including ones made after the
/// activation, and nothing else; a freed buffer and a released channel reach nothing.
#[test]
fn a_channel_reaches_only_the_buffers_of_its_user() {
    let kmd = common::small_kmd(8, Stepping::Threads, 0);
    let (a, b) = (kmd.open(), kmd.open());
    let (dbc_a, in_a) = copy_input_buffer(&a);
    let (dbc_b, in_b) = copy_input_buffer(&b);
    let (dbc_a, dbc_b) = (dbc_a as usize, dbc_b as usize);
    let at = |client: &aicsim_kmd::Client, bo| client.mmap_bo(bo).unwrap().info();
    let (x, y) = (at(&a, in_a), at(&b, in_b));
    assert!(kmd.iommu_allows(dbc_a, x.offset, x.size) && kmd.iommu_allows(dbc_b, y.offset, y.size));
    assert!(!kmd.iommu_allows(dbc_a, y.offset, 1), "A's channel reaches B's buffer");
    assert!(!kmd.iommu_allows(dbc_b, x.offset, 1), "B's channel reaches A's buffer");
    let later = b.create_bo(3 * 4096).unwrap();
    let z = at(&b, later);
    assert!(kmd.iommu_allows(dbc_b, z.offset, z.size) && !kmd.iommu_allows(dbc_a, z.offset, z.size));
    // A range that runs past the buffer into a neighbour's page is refused as a whole.
    assert!(!kmd.iommu_allows(dbc_a, x.offset, x.size + 4096));
    b.free_bo(later).unwrap();
    assert!(!kmd.iommu_allows(dbc_b, z.offset, 1), "a freed buffer stays reachable");
    a.deactivate(dbc_a as u32).unwrap();
    assert!(!kmd.iommu_allows(dbc_a, x.offset, 1), "a released channel still reaches memory");
    assert_eq!(kmd.iommu_faults(), 0);
}
