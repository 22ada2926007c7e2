//! The shared region as a file, for a device in another process (`aic-device --shm`):
//! opened without following symbolic links, created private to its user (0600), and
//! claimed by one device and one host at a time with open-file-description locks on a
//! byte each (released by the kernel when the holder exits, however it exits). Its
//! [`RegionHeader`] tells a device what the host made the region for.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use aicsim_abi::layout::{self, MemoryMap, RegionHeader, REGION_MAGIC};

/// Who holds a region file: one device process and one host at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    Device = 0,
    Host = 1,
}

impl Party {
    fn name(self) -> &'static str {
        match self {
            Party::Device => "device",
            Party::Host => "host",
        }
    }
}

/// Opens the region file at `path` for reading and writing, never through a symbolic
/// link; `create` makes it (mode 0600) if it does not exist. Anything but a regular file
/// is refused.
pub fn open(path: &Path, create: bool) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                io::Error::other(format!("{} is a symbolic link; refusing to follow it", path.display()))
            }
            _ => e,
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    Ok(file)
}

fn lock_request(party: Party, kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = party as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Claims `party`'s byte of the file for as long as `file` stays open. `Err` naming the
/// other holder's role if another open file already holds it.
pub fn claim(file: &File, path: &Path, party: Party) -> io::Result<()> {
    let lock = lock_request(party, libc::F_WRLCK as libc::c_short);
    // SAFETY: `fcntl` with F_OFD_SETLK reads the `flock` we pass by pointer, which lives
    // across the call; the descriptor is open for as long as `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another {} is already attached to {}", party.name(), path.display()),
        )),
        _ => Err(e),
    }
}

/// Whether another open file holds `party`'s byte (a live device or host).
pub fn held(file: &File, party: Party) -> io::Result<bool> {
    let mut lock = lock_request(party, libc::F_WRLCK as libc::c_short);
    // SAFETY: `fcntl` with F_OFD_GETLK reads and writes the `flock` we pass by pointer,
    // which lives across the call; the descriptor is open for as long as `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// The header of the region file, if a host has written one.
pub fn read_header(file: &File) -> io::Result<Option<RegionHeader>> {
    let mut raw = [0u8; std::mem::size_of::<RegionHeader>()];
    match file.read_exact_at(&mut raw, layout::REGION_HEADER) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header: RegionHeader = bytemuck::pod_read_unaligned(&raw);
    Ok((header.magic == REGION_MAGIC).then_some(header))
}

/// Reads a 32-bit device register of the file without mapping it (a monitor's view).
pub fn read_u32(file: &File, offset: u64) -> io::Result<u32> {
    let mut raw = [0u8; 4];
    file.read_exact_at(&mut raw, offset)?;
    Ok(u32::from_le_bytes(raw))
}

/// Reads `buf.len()` bytes at `offset` without mapping the file.
pub fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Every way the hardware shape in `header` differs from `num_nsp` and `map`, one clause
/// each naming both values ("ring size 512 in the region, 64 on this device"), or `None`
/// when they agree. `theirs` and `ours` say where each value is.
pub fn shape_mismatch(
    header: &RegionHeader,
    num_nsp: u32,
    map: &MemoryMap,
    theirs: &str,
    ours: &str,
) -> Option<String> {
    let clauses: Vec<String> = header
        .mismatches(num_nsp, map)
        .map(|m| format!("{} {} {theirs}, {} {ours}", m.what, m.region, m.here))
        .collect();
    (!clauses.is_empty()).then(|| clauses.join("; "))
}
