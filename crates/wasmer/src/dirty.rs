//! Kernel dirty-page tracking of a memory range, without guest instrumentation.
//!
//! On Linux ≥ 6.7 the range is registered with a userfaultfd in *asynchronous
//! write-protect* mode (`UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED`):
//! a write to a protected page is resolved by the kernel itself (no thread
//! waits, no signal), which only clears the page's write-protect bit. The
//! `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` then lists the pages whose bit
//! is clear (`PAGE_IS_WRITTEN`) and write-protects them again in the same call
//! (`PM_SCAN_WP_MATCHING`): one system call reads and resets the dirty set.
//!
//! Writes from every source are seen: guest code, host writes through
//! `MemoryView`, and the kernel itself (`read(2)` into the range).
//!
//! Where the kernel lacks any of this, [`DirtyTracker::probe`] and
//! [`DirtyTracker::new`] say why with an [`Unavailable`] reason, so that a caller
//! can fall back to hashing every page and report which mode it runs in.
//!
//! # Exactness
//!
//! On the kernels this was measured on (6.18) the reported set is exact at OS
//! page granularity: exactly the OS pages written since the last scan. It is a
//! superset (never a subset) in these documented cases:
//! - when the rewind page is larger than the OS page, a rewind page is reported
//!   when any of its OS pages was written;
//! - when the rewind page is smaller than the OS page, every rewind page inside
//!   a written OS page is reported;
//! - pages that were never write-protected read as written on the first scan
//!   that covers them (which protects them). The tracker write-protects
//!   [`GROWTH_HEADROOM`] bytes past the accessible length ahead of time
//!   (protection set on inaccessible pages survives the `mprotect` of a
//!   `memory.grow`), so this only happens when one growth jumps past the
//!   headroom, or for pages dropped with `MADV_DONTNEED`.
//!
//! Reading memory never marks a page as written.

use std::fmt;
use std::io;

use thiserror::Error;

/// Why kernel dirty tracking cannot be used in this process.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The target OS is not Linux.
    #[error("kernel dirty tracking needs Linux (userfaultfd and PAGEMAP_SCAN)")]
    NotLinux,
    /// The kernel has no userfaultfd (`ENOSYS`: built without `CONFIG_USERFAULTFD`).
    #[error("the kernel has no userfaultfd")]
    NoUserfaultfd {
        /// The error of the `userfaultfd(2)` system call.
        #[source]
        source: io::Error,
    },
    /// Neither `userfaultfd(2)` nor `/dev/userfaultfd` may be used by this
    /// process (`vm.unprivileged_userfaultfd = 0` without `CAP_SYS_PTRACE`, or a
    /// seccomp filter, and no access to `/dev/userfaultfd`).
    #[error("userfaultfd is not permitted for this process (and /dev/userfaultfd cannot be used)")]
    PermissionDenied {
        /// The error of the last attempt.
        #[source]
        source: io::Error,
    },
    /// The userfaultfd API handshake (`UFFDIO_API`) failed.
    #[error("the UFFDIO_API handshake failed")]
    Handshake {
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// The kernel's userfaultfd lacks asynchronous write-protection
    /// (`UFFD_FEATURE_WP_ASYNC`, Linux ≥ 6.7) or write-protection of unpopulated
    /// pages (`UFFD_FEATURE_WP_UNPOPULATED`, Linux ≥ 6.4).
    #[error(
        "the kernel's userfaultfd lacks {missing} (needs Linux >= 6.7; kernel offers features {offered:#x})"
    )]
    MissingFeatures {
        /// Names of the missing features.
        missing: &'static str,
        /// The feature mask the kernel offered.
        offered: u64,
    },
    /// `/proc/self/pagemap` cannot be opened (no procfs mounted, or denied).
    #[error("cannot open /proc/self/pagemap")]
    NoPagemap {
        /// The error of `open(2)`.
        #[source]
        source: io::Error,
    },
    /// The `PAGEMAP_SCAN` ioctl is missing (`ENOTTY`: Linux < 6.7) or refused.
    #[error("the PAGEMAP_SCAN ioctl is not available (needs Linux >= 6.7)")]
    NoPagemapScan {
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// The self-test of [`DirtyTracker::probe`] failed with an error.
    #[error("kernel dirty tracking self-test failed")]
    SelfTestError {
        /// What failed.
        #[source]
        source: Box<DirtyError>,
    },
    /// Every call succeeded but a write was not reported as expected.
    #[error(
        "kernel dirty tracking self-test failed: expected pages {expected:?}, kernel reported {found:?}"
    )]
    SelfTestFailed {
        /// Pages written by the self-test.
        expected: Vec<u32>,
        /// Pages reported by the scan.
        found: Vec<u32>,
    },
}

/// Errors of [`DirtyTracker`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DirtyError {
    /// Kernel dirty tracking is not available here; fall back to a full scan.
    #[error("kernel dirty tracking is unavailable")]
    Unavailable(#[from] Unavailable),
    /// A rewind page size that is zero or not a power of two.
    #[error("page size {page_size} is not a power of two")]
    InvalidPageSize {
        /// The rejected page size.
        page_size: usize,
    },
    /// The tracked range does not start on an OS page boundary.
    #[error("base address {base:#x} is not aligned to the OS page size {os_page_size}")]
    Misaligned {
        /// The rejected base address.
        base: usize,
        /// The OS page size.
        os_page_size: usize,
    },
    /// A range outside the registered reservation.
    #[error(
        "range of {len} bytes at offset {offset} exceeds the registered reservation of {reserved_len} bytes"
    )]
    OutOfRange {
        /// Start of the range, from the base.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Length of the registered reservation.
        reserved_len: usize,
    },
    /// Page indices of this memory length and page size do not fit in `u32`.
    #[error("{len} bytes in pages of {page_size} bytes give more than 2^32 page indices")]
    TooManyPages {
        /// The memory length.
        len: usize,
        /// The rewind page size.
        page_size: usize,
    },
    /// `UFFDIO_REGISTER` of the reservation failed (range not mapped, not
    /// anonymous or shmem, or already registered by another userfaultfd).
    #[error("UFFDIO_REGISTER (write-protect mode) of {len} bytes at {start:#x} failed")]
    Register {
        /// Start address.
        start: usize,
        /// Length in bytes.
        len: usize,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// `UFFDIO_WRITEPROTECT` failed.
    #[error("UFFDIO_WRITEPROTECT of {len} bytes at offset {offset} failed")]
    WriteProtect {
        /// Start of the range, from the base.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// `PAGEMAP_SCAN` failed (for example `EPERM` from `PM_SCAN_CHECK_WPASYNC`
    /// when a page of the range is no longer registered: the memory was
    /// unmapped or replaced).
    #[error("PAGEMAP_SCAN of {len} bytes at offset {offset} failed")]
    Scan {
        /// Start of the scanned range, from the base.
        offset: usize,
        /// Length of the scanned range.
        len: usize,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
}

/// Whether kernel dirty tracking works in this process, and if not, why.
#[derive(Debug)]
pub enum Availability {
    /// userfaultfd asynchronous write-protection and `PAGEMAP_SCAN` work.
    Available,
    /// Not available; capture must hash every page.
    Unavailable(Unavailable),
}

impl Availability {
    /// True when [`DirtyTracker::new`] can be expected to succeed.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available => f.write_str("kernel dirty tracking (userfaultfd WP-async + PAGEMAP_SCAN)"),
            Self::Unavailable(why) => {
                write!(f, "full scan (kernel dirty tracking unavailable: {why})")
            }
        }
    }
}

/// How far past the accessible length the tracker write-protects ahead, so
/// that pages added by `memory.grow` are tracked exactly from their first
/// write. Protecting unpopulated pages installs page-table markers: about
/// 0.35 ms and 128 KiB of page tables per 64 MiB, paid once.
pub const GROWTH_HEADROOM: usize = 64 << 20;

/// Checks that `page_size` is a power of two and that page indices of `len`
/// bytes fit in `u32`; returns `log2(page_size)`.
fn page_shift(len: usize, page_size: usize) -> Result<u32, DirtyError> {
    if !page_size.is_power_of_two() {
        return Err(DirtyError::InvalidPageSize { page_size });
    }
    let pages = len.div_ceil(page_size);
    if u64::try_from(pages).map_or(true, |p| p > u64::from(u32::MAX) + 1) {
        return Err(DirtyError::TooManyPages { len, page_size });
    }
    Ok(page_size.trailing_zeros())
}

/// Appends to `out` the rewind pages (of `1 << shift` bytes) that overlap the
/// written byte range `[start, end)` (offsets from the base), below
/// `limit_pages`, skipping indices already at the end of `out` (regions arrive
/// in ascending order, so two regions can share one large rewind page).
fn push_region(out: &mut Vec<u32>, start: usize, end: usize, shift: u32, limit_pages: usize) {
    let page_size = 1usize << shift;
    let mut first = start >> shift;
    let last = end.div_ceil(page_size).min(limit_pages);
    if let Some(&prev) = out.last() {
        first = first.max(prev as usize + 1);
    }
    // The casts cannot truncate: `page_shift` checked that `limit_pages` ≤ 2^32.
    out.extend((first..last).map(|i| i as u32));
}

#[cfg(target_os = "linux")]
mod linux {
    //! The Linux implementation: raw uapi definitions and the ioctls.

    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::{push_region, DirtyError, Unavailable};

    /// Kernel uapi definitions missing from the `libc` crate (0.2.191 defines
    /// only `SYS_userfaultfd`). Values from `include/uapi/linux/userfaultfd.h`
    /// and `include/uapi/linux/fs.h` (Linux 6.7+); the ioctl numbers are built
    /// with libc's `_IOWR`/`_IO` from the struct sizes, as the C macros do, and
    /// a test pins their x86_64 values.
    pub(super) mod uapi {
        // ---- linux/userfaultfd.h ----
        /// `UFFD_API`.
        pub const UFFD_API: u64 = 0xAA;
        /// `UFFD_USER_MODE_ONLY` (flag of `userfaultfd(2)`).
        pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
        /// `UFFD_FEATURE_WP_UNPOPULATED` (Linux 6.4).
        pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
        /// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7).
        pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
        /// `UFFDIO_REGISTER_MODE_WP`.
        pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
        /// `UFFDIO_WRITEPROTECT_MODE_WP`.
        pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
        /// `_UFFDIO_WRITEPROTECT`, the bit number in `uffdio_register.ioctls`.
        pub const UFFDIO_WRITEPROTECT_NR: u32 = 0x06;

        /// `struct uffdio_api`.
        #[repr(C)]
        #[derive(Debug, Default)]
        pub struct UffdioApi {
            pub api: u64,
            pub features: u64,
            pub ioctls: u64,
        }

        /// `struct uffdio_range`.
        #[repr(C)]
        #[derive(Debug, Default)]
        pub struct UffdioRange {
            pub start: u64,
            pub len: u64,
        }

        /// `struct uffdio_register`.
        #[repr(C)]
        #[derive(Debug, Default)]
        pub struct UffdioRegister {
            pub range: UffdioRange,
            pub mode: u64,
            pub ioctls: u64,
        }

        /// `struct uffdio_writeprotect`.
        #[repr(C)]
        #[derive(Debug, Default)]
        pub struct UffdioWriteprotect {
            pub range: UffdioRange,
            pub mode: u64,
        }

        /// `UFFDIO` (the ioctl type).
        const UFFDIO: u32 = 0xAA;
        /// `UFFDIO_API`: `_IOWR(UFFDIO, 0x3F, struct uffdio_api)`.
        pub const UFFDIO_API: libc::Ioctl = libc::_IOWR::<UffdioApi>(UFFDIO, 0x3F);
        /// `UFFDIO_REGISTER`: `_IOWR(UFFDIO, 0x00, struct uffdio_register)`.
        pub const UFFDIO_REGISTER: libc::Ioctl = libc::_IOWR::<UffdioRegister>(UFFDIO, 0x00);
        /// `UFFDIO_WRITEPROTECT`: `_IOWR(UFFDIO, 0x06, struct uffdio_writeprotect)`.
        pub const UFFDIO_WRITEPROTECT: libc::Ioctl =
            libc::_IOWR::<UffdioWriteprotect>(UFFDIO, UFFDIO_WRITEPROTECT_NR);
        /// `USERFAULTFD_IOC_NEW`: `_IO(USERFAULTFD_IOC, 0x00)` on `/dev/userfaultfd`.
        pub const USERFAULTFD_IOC_NEW: libc::Ioctl = libc::_IO(0xAA, 0x00);

        // ---- linux/fs.h ----
        /// `PAGE_IS_WRITTEN`.
        pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
        /// `PM_SCAN_WP_MATCHING`: write-protect the matched pages.
        pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
        /// `PM_SCAN_CHECK_WPASYNC`: fail when a page is not in a WP-async range.
        pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

        /// `struct page_region`.
        #[repr(C)]
        #[derive(Debug, Default, Clone, Copy)]
        pub struct PageRegion {
            pub start: u64,
            pub end: u64,
            pub categories: u64,
        }

        /// `struct pm_scan_arg`.
        #[repr(C)]
        #[derive(Debug, Default)]
        pub struct PmScanArg {
            pub size: u64,
            pub flags: u64,
            pub start: u64,
            pub end: u64,
            pub walk_end: u64,
            pub vec: u64,
            pub vec_len: u64,
            pub max_pages: u64,
            pub category_inverted: u64,
            pub category_mask: u64,
            pub category_anyof_mask: u64,
            pub return_mask: u64,
        }

        /// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
        pub const PAGEMAP_SCAN: libc::Ioctl = libc::_IOWR::<PmScanArg>(b'f' as u32, 16);
    }

    use uapi::*;

    /// How many regions one `PAGEMAP_SCAN` call may return before it stops
    /// early (then `walk_end < end` and the scan continues from there).
    const REGIONS_PER_CALL: usize = 512;

    /// The OS page size.
    pub(super) fn os_page_size() -> usize {
        // SAFETY: sysconf takes no pointers and has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .unwrap_or(4096)
    }

    /// `ioctl(fd, request, arg)` retried on `EINTR`; returns the non-negative
    /// result or the OS error.
    ///
    /// # Safety
    /// `arg` must point to a live, writable value of the type the kernel
    /// expects for `request`, including any buffers that value points to.
    unsafe fn ioctl<T>(fd: &impl AsRawFd, request: libc::Ioctl, arg: *mut T) -> io::Result<i32> {
        loop {
            // SAFETY: the caller guarantees `arg` is what `request` expects; the
            // fd is open for the lifetime of the borrow.
            let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
            if ret >= 0 {
                return Ok(ret);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Opens a userfaultfd: the system call (full, then user-mode-only), then
    /// `/dev/userfaultfd`.
    fn open_uffd() -> Result<OwnedFd, Unavailable> {
        let base_flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let mut last = None;
        // UFFD_USER_MODE_ONLY suffices here: asynchronous write-protect faults
        // are resolved in the kernel and never reach handle_userfault(), so a
        // kernel-mode write (read(2) into the range) is tracked either way.
        for flags in [base_flags, base_flags | UFFD_USER_MODE_ONLY] {
            // SAFETY: userfaultfd(2) takes one integer argument and returns a
            // new file descriptor or -1; no memory is passed.
            let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
            if fd >= 0 {
                let fd = libc::c_int::try_from(fd).expect("holds because file descriptors fit in c_int");
                // SAFETY: the kernel just returned this descriptor to us and
                // nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOSYS) => return Err(Unavailable::NoUserfaultfd { source: err }),
                _ => last = Some(err),
            }
        }
        match File::options().read(true).write(true).open("/dev/userfaultfd") {
            Ok(dev) => {
                // SAFETY: USERFAULTFD_IOC_NEW takes its flags as the integer
                // argument itself (no pointer) and returns a new descriptor.
                let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, base_flags) };
                if fd >= 0 {
                    // SAFETY: the kernel just returned this descriptor to us
                    // and nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                Err(Unavailable::PermissionDenied {
                    source: io::Error::last_os_error(),
                })
            }
            Err(open_err) => Err(Unavailable::PermissionDenied {
                source: last.unwrap_or(open_err),
            }),
        }
    }

    /// Performs the `UFFDIO_API` handshake asking for `features`; returns the
    /// features the kernel offers.
    fn handshake(uffd: &OwnedFd, features: u64) -> Result<u64, Unavailable> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: `api` is a live `struct uffdio_api`, what UFFDIO_API reads
        // and writes.
        unsafe { ioctl(uffd, UFFDIO_API, &mut api) }.map_err(|source| Unavailable::Handshake { source })?;
        Ok(api.features)
    }

    /// Opens a userfaultfd in asynchronous write-protect mode.
    pub(super) fn open_wp_async() -> Result<OwnedFd, Unavailable> {
        const WANTED: u64 = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
        // UFFDIO_API succeeds only once per descriptor: ask what is offered on
        // a throw-away one, so a missing feature gets a precise reason.
        let offered = handshake(&open_uffd()?, 0)?;
        if offered & WANTED != WANTED {
            let missing = match (
                offered & UFFD_FEATURE_WP_ASYNC != 0,
                offered & UFFD_FEATURE_WP_UNPOPULATED != 0,
            ) {
                (false, false) => "UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_WP_UNPOPULATED",
                (false, true) => "UFFD_FEATURE_WP_ASYNC",
                _ => "UFFD_FEATURE_WP_UNPOPULATED",
            };
            return Err(Unavailable::MissingFeatures { missing, offered });
        }
        let uffd = open_uffd()?;
        handshake(&uffd, WANTED)?;
        Ok(uffd)
    }

    /// Opens `/proc/self/pagemap` and checks that it has `PAGEMAP_SCAN`.
    pub(super) fn open_pagemap() -> Result<File, Unavailable> {
        let pagemap = File::open("/proc/self/pagemap").map_err(|source| Unavailable::NoPagemap { source })?;
        // An empty range with no output buffer: the kernel validates the
        // arguments and returns 0, or ENOTTY where the ioctl does not exist.
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a live `struct pm_scan_arg` with `vec` null and
        // `vec_len` 0, so the kernel writes only `arg.walk_end`.
        unsafe { ioctl(&pagemap, PAGEMAP_SCAN, &mut arg) }
            .map_err(|source| Unavailable::NoPagemapScan { source })?;
        Ok(pagemap)
    }

    /// Registers `[start, start + len)` with `uffd` in write-protect mode.
    pub(super) fn register(uffd: &OwnedFd, start: usize, len: usize) -> Result<(), DirtyError> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: `reg` is a live `struct uffdio_register`, what UFFDIO_REGISTER
        // reads and writes. Registering a range has no effect on memory
        // contents: the kernel checks that the range is mapped and eligible.
        unsafe { ioctl(uffd, UFFDIO_REGISTER, &mut reg) }.map_err(|source| DirtyError::Register {
            start,
            len,
            source,
        })?;
        if reg.ioctls & (1 << UFFDIO_WRITEPROTECT_NR) == 0 {
            return Err(DirtyError::Register {
                start,
                len,
                source: io::Error::other("the kernel does not offer UFFDIO_WRITEPROTECT on this range"),
            });
        }
        Ok(())
    }

    /// Write-protects `[base + offset, base + offset + len)`.
    pub(super) fn write_protect(
        uffd: &OwnedFd,
        base: usize,
        offset: usize,
        len: usize,
    ) -> Result<(), DirtyError> {
        if len == 0 {
            return Ok(());
        }
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: (base + offset) as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: `wp` is a live `struct uffdio_writeprotect`, what
        // UFFDIO_WRITEPROTECT reads. It changes page-table protection bits
        // only; in WP-async mode a later write to the range is resolved by the
        // kernel, so no access to the range can block or fault visibly.
        unsafe { ioctl(uffd, UFFDIO_WRITEPROTECT, &mut wp) }
            .map(drop)
            .map_err(|source| DirtyError::WriteProtect { offset, len, source })
    }

    /// Lists the OS pages of `[base, base + len)` written since they were last
    /// protected, protects them again, and appends the overlapping rewind
    /// pages (of `1 << shift` bytes) to `out`, in ascending order.
    pub(super) fn scan(
        pagemap: &File,
        regions: &mut Vec<PageRegion>,
        base: usize,
        len: usize,
        shift: u32,
        out: &mut Vec<u32>,
    ) -> Result<(), DirtyError> {
        let end = base + len;
        let limit_pages = len.div_ceil(1 << shift);
        let mut start = base;
        regions.clear();
        regions.reserve(REGIONS_PER_CALL);
        while start < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: start as u64,
                end: end as u64,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.capacity() as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            };
            let scan_err = |source| DirtyError::Scan {
                offset: start - base,
                len: end - start,
                source,
            };
            // SAFETY: `arg` is a live `struct pm_scan_arg`; its `vec` points to
            // the (empty) allocation of `regions` with room for `vec_len`
            // entries of `struct page_region`, and nothing else accesses
            // `regions` during the call. The kernel writes at most `vec_len`
            // entries there and returns how many.
            let filled = unsafe { ioctl(pagemap, PAGEMAP_SCAN, &mut arg) }.map_err(scan_err)?;
            let filled = usize::try_from(filled).expect("holds because ioctl returned a non-negative count");
            if filled > regions.capacity() {
                return Err(scan_err(io::Error::other(
                    "PAGEMAP_SCAN reported more regions than vec_len",
                )));
            }
            // SAFETY: the kernel initialized the first `filled` entries (≤ the
            // capacity, checked above); `PageRegion` is plain integers, valid
            // for any bit pattern.
            unsafe { regions.set_len(filled) };
            for r in regions.iter() {
                let (Ok(r_start), Ok(r_end)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
                    continue;
                };
                let r_start = r_start.clamp(base, end) - base;
                let r_end = r_end.clamp(base, end) - base;
                if r_start < r_end {
                    push_region(out, r_start, r_end, shift, limit_pages);
                }
            }
            regions.clear();
            // The walk stops early (walk_end < end) when the output vector is
            // full: go on from where it stopped.
            let walk_end = usize::try_from(arg.walk_end).unwrap_or(end).min(end);
            if walk_end <= start {
                return Err(scan_err(io::Error::other("PAGEMAP_SCAN made no progress")));
            }
            start = walk_end;
        }
        Ok(())
    }

    /// A private anonymous read-write mapping, unmapped on drop (probe and tests).
    pub(crate) struct AnonMapping {
        ptr: *mut u8,
        len: usize,
    }

    impl AnonMapping {
        /// Maps `len` bytes (a multiple of the OS page size).
        pub(crate) fn new(len: usize) -> io::Result<Self> {
            // SAFETY: a fresh anonymous mapping at an address the kernel picks;
            // no existing memory is affected.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            Ok(Self { ptr: ptr.cast(), len })
        }

        /// Start of the mapping.
        pub(crate) fn as_ptr(&self) -> *mut u8 {
            self.ptr
        }

        /// The mapping as a mutable slice.
        pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
            // SAFETY: `ptr..ptr + len` is a live read-write mapping owned by
            // `self`, initialized (zero-filled by the kernel), and the `&mut
            // self` borrow makes this the only reference to it.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
        }

        /// The mapping as a slice.
        #[cfg(test)]
        pub(crate) fn as_slice(&self) -> &[u8] {
            // SAFETY: as in `as_mut_slice`; the shared borrow of `self` rules
            // out a concurrent `&mut` slice.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    impl Drop for AnonMapping {
        fn drop(&mut self) {
            // SAFETY: `ptr..ptr + len` was mapped by `new` and no slice
            // borrowed from `self` outlives it.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Kernel dirty-page tracker for one memory reservation (a wasm linear memory).
///
/// Create it once per memory with [`DirtyTracker::new`]; then every
/// [`DirtyTracker::take_written`] returns the pages written since the previous
/// call (or since `new`) and starts a new interval.
///
/// # Why `new` is a safe function
///
/// The tracker never reads or writes the memory at `base`: it only asks the
/// kernel to register the address range with a userfaultfd in asynchronous
/// write-protect mode and to flip page-table write-protect bits. The kernel
/// validates the range (unmapped or ineligible ranges fail with
/// [`DirtyError::Register`]), and in asynchronous mode a write to a protected
/// page is resolved by the kernel itself: no thread blocks and no signal is
/// raised, so no code observes any difference except through
/// [`take_written`](Self::take_written). Passing a wrong range therefore gives
/// meaningless results, never undefined behaviour. The contract that makes the
/// results meaningful: `base..base + reserved_len` is the whole reservation of
/// one linear memory, which does not move for the tracker's lifetime.
///
/// Only one userfaultfd can register a range: a second tracker on the same
/// memory fails with `EBUSY`. Dropping the tracker closes the userfaultfd,
/// which unregisters the range.
#[derive(Debug)]
pub struct DirtyTracker {
    #[cfg(target_os = "linux")]
    uffd: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    pagemap: std::fs::File,
    #[cfg(target_os = "linux")]
    regions: Vec<linux::uapi::PageRegion>,
    base: usize,
    reserved_len: usize,
    os_page_size: usize,
    /// Bytes from `base` write-protected at least once (accessible or not).
    protected_len: usize,
}

impl DirtyTracker {
    /// Checks whether kernel dirty tracking works here, end to end: opens a
    /// userfaultfd, tracks a scratch two-page mapping, writes one page and
    /// checks that exactly that page is reported. Costs well under a
    /// millisecond.
    pub fn probe() -> Availability {
        #[cfg(target_os = "linux")]
        {
            match Self::self_test() {
                Ok(()) => Availability::Available,
                Err(DirtyError::Unavailable(why)) => Availability::Unavailable(why),
                Err(other) => Availability::Unavailable(Unavailable::SelfTestError {
                    source: Box::new(other),
                }),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Availability::Unavailable(Unavailable::NotLinux)
        }
    }

    #[cfg(target_os = "linux")]
    fn self_test() -> Result<(), DirtyError> {
        let page = linux::os_page_size();
        let mut map = linux::AnonMapping::new(2 * page).map_err(|source| DirtyError::Register {
            start: 0,
            len: 2 * page,
            source,
        })?;
        let mut tracker = Self::new(map.as_ptr(), 2 * page, 2 * page)?;
        map.as_mut_slice()[page + 7] = 1;
        let mut found = Vec::new();
        tracker.take_written(2 * page, page, &mut found)?;
        if found != [1] {
            return Err(Unavailable::SelfTestFailed {
                expected: vec![1],
                found,
            }
            .into());
        }
        Ok(())
    }

    /// Starts tracking writes to the reservation `base..base + reserved_len`
    /// and write-protects its first `accessible_len` bytes (and
    /// [`GROWTH_HEADROOM`] beyond, where reserved), so that the first
    /// [`take_written`](Self::take_written) reports the pages written after
    /// this call.
    ///
    /// `base` must be OS-page aligned; `reserved_len` is rounded up to whole OS
    /// pages and may include inaccessible (`PROT_NONE`) pages into which the
    /// memory grows later. See the type's documentation for why this function
    /// is safe.
    pub fn new(base: *mut u8, reserved_len: usize, accessible_len: usize) -> Result<Self, DirtyError> {
        #[cfg(target_os = "linux")]
        {
            let os_page_size = linux::os_page_size();
            let base = base as usize;
            if !base.is_multiple_of(os_page_size) {
                return Err(DirtyError::Misaligned { base, os_page_size });
            }
            let reserved_len = reserved_len.div_ceil(os_page_size) * os_page_size;
            if accessible_len > reserved_len {
                return Err(DirtyError::OutOfRange {
                    offset: 0,
                    len: accessible_len,
                    reserved_len,
                });
            }
            let uffd = linux::open_wp_async()?;
            let pagemap = linux::open_pagemap()?;
            linux::register(&uffd, base, reserved_len)?;
            let mut tracker = Self {
                uffd,
                pagemap,
                regions: Vec::new(),
                base,
                reserved_len,
                os_page_size,
                protected_len: 0,
            };
            tracker.protect(0, accessible_len)?;
            tracker.protect_ahead(accessible_len)?;
            Ok(tracker)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (base, reserved_len, accessible_len);
            Err(Unavailable::NotLinux.into())
        }
    }

    /// Start of the tracked reservation.
    pub fn base(&self) -> *const u8 {
        self.base as *const u8
    }

    /// Length of the registered reservation in bytes (whole OS pages).
    pub fn reserved_len(&self) -> usize {
        self.reserved_len
    }

    /// The OS page size, the granularity of the kernel's dirty bits.
    pub fn os_page_size(&self) -> usize {
        self.os_page_size
    }

    /// Replaces the contents of `out` with the indices (ascending, unique) of
    /// the rewind pages of `page_size` bytes, within the first
    /// `accessible_len` bytes, that were written since the previous call (or
    /// since [`new`](Self::new)), and write-protects them again in the same
    /// system call.
    ///
    /// `page_size` is any power of two. Above the OS page size, a rewind page
    /// is reported when any of its OS pages was written; below it, every rewind
    /// page inside a written OS page is reported. Pass the memory's current
    /// length as `accessible_len`: growth since the previous call needs no
    /// separate step (grown pages within the protected headroom are exact;
    /// beyond it they read as written once).
    ///
    /// Call it while the guest is not running (between iterations): the
    /// protection extended past `accessible_len` assumes those pages are still
    /// inaccessible.
    pub fn take_written(
        &mut self,
        accessible_len: usize,
        page_size: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), DirtyError> {
        out.clear();
        let shift = page_shift(accessible_len, page_size)?;
        if accessible_len > self.reserved_len {
            return Err(DirtyError::OutOfRange {
                offset: 0,
                len: accessible_len,
                reserved_len: self.reserved_len,
            });
        }
        #[cfg(target_os = "linux")]
        {
            let scan_len = accessible_len.div_ceil(self.os_page_size) * self.os_page_size;
            let scan_len = scan_len.min(self.reserved_len);
            linux::scan(&self.pagemap, &mut self.regions, self.base, scan_len, shift, out)?;
            // Pages of the last partial OS page past `accessible_len` map to
            // indices ≥ limit and were dropped by `push_region`.
            debug_assert!(out.windows(2).all(|w| w[0] < w[1]));
            // The scan protected everything up to `scan_len`.
            self.protected_len = self.protected_len.max(scan_len);
            self.protect_ahead(scan_len)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = shift;
        }
        Ok(())
    }

    /// Write-protects `offset..offset + len` (widened to whole OS pages),
    /// forgetting any writes there that no [`take_written`](Self::take_written)
    /// has reported yet.
    ///
    /// The tracker already protects ahead of growth ([`GROWTH_HEADROOM`]), so
    /// this is rarely needed. Use it only where the contents of the range are
    /// known without a scan, for example right after the host grew the memory
    /// past the headroom and before the guest ran again (the new pages are
    /// zero). After a growth by the guest itself do not call it: the guest may
    /// already have written to the new pages; let `take_written` scan them.
    pub fn protect(&mut self, offset: usize, len: usize) -> Result<(), DirtyError> {
        let out_of_range = || DirtyError::OutOfRange {
            offset,
            len,
            reserved_len: self.reserved_len,
        };
        let end = offset.checked_add(len).ok_or_else(out_of_range)?;
        if end > self.reserved_len {
            return Err(out_of_range());
        }
        #[cfg(target_os = "linux")]
        {
            let start = offset / self.os_page_size * self.os_page_size;
            let end = (end.div_ceil(self.os_page_size) * self.os_page_size).min(self.reserved_len);
            linux::write_protect(&self.uffd, self.base, start, end - start)?;
            if start <= self.protected_len {
                self.protected_len = self.protected_len.max(end);
            }
        }
        Ok(())
    }

    /// Write-protects the not yet protected pages between `accessible_len`
    /// and `accessible_len + GROWTH_HEADROOM`, once less than half the
    /// headroom is left. Those pages are inaccessible, so no write is lost.
    #[cfg(target_os = "linux")]
    fn protect_ahead(&mut self, accessible_len: usize) -> Result<(), DirtyError> {
        let accessible_len = accessible_len.div_ceil(self.os_page_size) * self.os_page_size;
        let want = accessible_len
            .saturating_add(GROWTH_HEADROOM)
            .min(self.reserved_len);
        let low_water = accessible_len
            .saturating_add(GROWTH_HEADROOM / 2)
            .min(self.reserved_len);
        if self.protected_len >= low_water {
            return Ok(());
        }
        let from = self.protected_len.max(accessible_len);
        if from < want {
            self.protect(from, want - from)?;
        }
        self.protected_len = self.protected_len.max(want);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
