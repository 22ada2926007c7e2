//! The shared region: one `MAP_SHARED` mapping of a memfd (or of a file another
//! process maps too), accessed only through [`SharedMemory`] — copies and 32-bit
//! atomics at offsets — plus futex wait/wake on its words. The memfd is sparse: a
//! 16 GiB device DDR costs nothing until it is touched.

use crate::shared_bytes;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use aicsim_abi::memory::{check_range, CopyTicket, OutOfRange, SharedMemory};
use memmap2::{MmapOptions, MmapRaw};

/// A shared mapping of `size` bytes.
pub struct SharedRegion {
    map: MmapRaw,
    size: u64,
    _file: File,
    /// The copy engine, started with the first copy that may run beside its caller.
    dma: OnceLock<DmaEngine>,
}

/// One copy inside the region: source and destination addresses, length, ticket.
type CopyJob = (usize, usize, usize, u64);

/// A thread that carries out copies inside the region in the order they were started
/// (the device's DMA engine, beside the thread that runs the firmware).
struct DmaEngine {
    jobs: Mutex<Option<mpsc::Sender<CopyJob>>>,
    /// The last ticket whose copy is done.
    done: Arc<AtomicU64>,
    next: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl DmaEngine {
    fn start() -> DmaEngine {
        let (tx, rx) = mpsc::channel::<CopyJob>();
        let done = Arc::new(AtomicU64::new(0));
        let finished = done.clone();
        let thread = std::thread::Builder::new()
            .name("aicsim-dma".into())
            .spawn(move || {
                for (src, dst, len, ticket) in rx {
                    // SAFETY: `copy_start` checked both ranges against the mapping, which
                    // outlives this thread (the region joins it before unmapping); every
                    // access is atomic, whatever else touches the ranges meanwhile.
                    unsafe { shared_bytes::copy(src as *const u8, dst as *mut u8, len) };
                    // Release: the bytes are in place before the ticket says so.
                    finished.store(ticket, Ordering::Release);
                }
            })
            .expect("spawn the DMA thread");
        DmaEngine { jobs: Mutex::new(Some(tx)), done, next: AtomicU64::new(0), thread: Mutex::new(Some(thread)) }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        if let Some(dma) = self.dma.get() {
            dma.jobs.lock().take();
            if let Some(t) = dma.thread.lock().take() {
                let _ = t.join();
            }
        }
    }
}

impl SharedRegion {
    /// A new zero-filled anonymous region of `size` bytes backed by a memfd.
    pub fn anonymous(size: u64) -> io::Result<SharedRegion> {
        // SAFETY: the name is a valid NUL-terminated string; the call has no other inputs.
        let fd = unsafe { libc::memfd_create(c"aicsim-shared".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)?;
        SharedRegion::from_file(file, size)
    }

    /// Maps `size` bytes of `file` shared (another process may map the same file).
    pub fn from_file(file: File, size: u64) -> io::Result<SharedRegion> {
        let len = usize::try_from(size).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(SharedRegion { map, size, _file: file, dma: OnceLock::new() })
    }

    fn word(&self, offset: u64) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.size, "register offset {offset:#x} out of range");
        // SAFETY: the offset is 4-aligned and inside the mapping (checked above), the
        // mapping lives as long as `self`, and every access to a register word, from
        // either side, is atomic.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset as usize).cast::<u32>()) }
    }

    fn dword(&self, offset: u64) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.size, "register offset {offset:#x} out of range");
        // SAFETY: the offset is 8-aligned and inside the mapping (checked above), the
        // mapping (page-aligned) lives as long as `self`, and every access to a 64-bit
        // register, from either side, is atomic.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset as usize).cast::<u64>()) }
    }

    /// Makes `len` bytes at `offset` read as zeros: memory handed to a new owner carries
    /// nothing of the last one's. Whole pages go back to the kernel (MADV_REMOVE: they
    /// read as zeros and cost nothing until written again), the edges are written.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        check_range(offset, len, self.size)?;
        // The usual page size; where pages are larger, madvise refuses and the whole
        // range is written instead.
        let page = 4096u64;
        let (first, last) = (offset.next_multiple_of(page), (offset + len) / page * page);
        let edges = if first < last {
            // SAFETY: [first, last) is page-aligned and inside the mapping (checked), which
            // lives as long as `self`. MADV_REMOVE only frees the pages' backing: the
            // mapping stays valid and the range reads as zeros after it.
            let freed = unsafe {
                libc::madvise(
                    self.map.as_mut_ptr().add(first as usize).cast(),
                    (last - first) as usize,
                    libc::MADV_REMOVE,
                )
            } == 0;
            if freed {
                [(offset, first), (last, offset + len)]
            } else {
                [(offset, offset + len), (0, 0)]
            }
        } else {
            [(offset, offset + len), (0, 0)]
        };
        for (start, end) in edges {
            if end > start {
                let zeros = [0u8; 4096];
                let mut at = start;
                while at < end {
                    let n = (end - at).min(zeros.len() as u64) as usize;
                    // SAFETY: the range is inside the mapping (checked), which lives as
                    // long as `self`; every access is atomic.
                    unsafe { shared_bytes::store(&zeros[..n], self.map.as_mut_ptr().add(at as usize)) };
                    at += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Sleeps while the word at `offset` holds `expected`, at most `timeout`. Returns
    /// early on a wake, a signal, or when the value already differs.
    pub fn wait(&self, offset: u64, expected: u32, timeout: Duration) {
        let word = self.word(offset);
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` points to a live, aligned u32 in a shared mapping; `ts` lives
        // across the call. FUTEX_WAIT (not private) works across processes.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
                0usize,
                0u32,
            );
        }
    }
}

impl SharedMemory for SharedRegion {
    fn size(&self) -> u64 {
        self.size
    }

    fn concurrent(&self) -> Option<&(dyn SharedMemory + Sync)> {
        Some(self)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        check_range(offset, buf.len() as u64, self.size)?;
        // SAFETY: the source range is inside the mapping (checked), which lives as long
        // as `self`; every access to it is atomic, so another party writing it at the
        // same time leaves `buf` with some mix of bytes, never undefined behaviour.
        unsafe { shared_bytes::load(self.map.as_ptr().add(offset as usize), buf) };
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        check_range(offset, data.len() as u64, self.size)?;
        // SAFETY: the destination range is inside the mapping (checked), which lives as
        // long as `self`; every access to it is atomic, whatever another party does.
        unsafe { shared_bytes::store(data, self.map.as_mut_ptr().add(offset as usize)) };
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), OutOfRange> {
        check_range(src, len, self.size)?;
        check_range(dst, len, self.size)?;
        // SAFETY: both ranges are inside the mapping (checked), which lives as long as
        // `self`; the copy tolerates overlap and every access is atomic.
        unsafe {
            shared_bytes::copy(
                self.map.as_ptr().add(src as usize),
                self.map.as_mut_ptr().add(dst as usize),
                len as usize,
            )
        };
        Ok(())
    }

    fn load_u32(&self, offset: u64, order: Ordering) -> u32 {
        self.word(offset).load(order)
    }

    fn store_u32(&self, offset: u64, value: u32, order: Ordering) {
        self.word(offset).store(value, order)
    }

    fn fetch_add_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.word(offset).fetch_add(value, order)
    }

    fn fetch_or_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.word(offset).fetch_or(value, order)
    }

    fn swap_u32(&self, offset: u64, value: u32, order: Ordering) -> u32 {
        self.word(offset).swap(value, order)
    }

    fn compare_exchange_u32(&self, offset: u64, current: u32, new: u32, order: Ordering) -> Result<u32, u32> {
        self.word(offset).compare_exchange(current, new, order, Ordering::Acquire)
    }

    fn load_u64(&self, offset: u64, order: Ordering) -> u64 {
        self.dword(offset).load(order)
    }

    fn copy_start(&self, src: u64, dst: u64, len: u64) -> Result<CopyTicket, OutOfRange> {
        check_range(src, len, self.size)?;
        check_range(dst, len, self.size)?;
        let dma = self.dma.get_or_init(DmaEngine::start);
        let ticket = dma.next.fetch_add(1, Ordering::Relaxed) + 1;
        let base = self.map.as_mut_ptr() as usize;
        let job = (base + src as usize, base + dst as usize, len as usize, ticket);
        match dma.jobs.lock().as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(CopyTicket(ticket)),
            // The engine is gone (the region is being dropped): copy here.
            _ => self.copy(src, dst, len).map(|()| CopyTicket::DONE),
        }
    }

    fn copy_finish(&self, ticket: CopyTicket) {
        let Some(dma) = self.dma.get() else { return };
        let backoff = crossbeam_utils::Backoff::new();
        // Acquire: pairs with the engine's Release; the bytes are visible after this.
        while dma.done.load(Ordering::Acquire) < ticket.0 {
            backoff.snooze();
        }
    }

    fn store_u64(&self, offset: u64, value: u64, order: Ordering) {
        self.dword(offset).store(value, order)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        self.zero(offset, len)
    }

    fn wake(&self, offset: u64) {
        let word = self.word(offset);
        // SAFETY: `word` points to a live, aligned u32 in the mapping.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_large_region_is_sparse_and_bounds_checked() {
        let r = SharedRegion::anonymous(8 << 30).unwrap();
        r.write((8 << 30) - 4, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        r.read((8 << 30) - 4, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(r.write((8 << 30) - 3, &[0; 4]).is_err());
        assert!(r.read(u64::MAX - 1, &mut b).is_err());
        assert!(r.copy(0, (8 << 30) - 2, 4).is_err());
    }

    #[test]
    fn a_futex_wait_ends_on_wake_or_timeout() {
        let r = Arc::new(SharedRegion::anonymous(4096).unwrap());
        let t = Instant::now();
        r.wait(0, 0, Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(25));
        let r2 = r.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            r2.store_u32(0, 1, Ordering::SeqCst);
            r2.wake(0);
        });
        let t = Instant::now();
        while r.load_u32(0, Ordering::SeqCst) == 0 {
            r.wait(0, 0, Duration::from_secs(5));
        }
        assert!(t.elapsed() < Duration::from_secs(4));
        waker.join().unwrap();
    }
}
