use std::collections::BTreeSet;

use super::*;

/// Pure mapping of written byte ranges to rewind page indices.
#[test]
fn push_region_maps_both_directions() {
    let mut out = Vec::new();
    // 16 KiB rewind pages: OS pages 1 and 3 share rewind page 0; 4..6 is page 1.
    push_region(&mut out, 4096, 8192, 14, 100);
    push_region(&mut out, 3 * 4096, 4 * 4096, 14, 100);
    push_region(&mut out, 4 * 4096, 6 * 4096, 14, 100);
    assert_eq!(out, [0, 1]);

    // 1 KiB rewind pages: an OS page is four rewind pages.
    out.clear();
    push_region(&mut out, 4096, 8192, 10, 100);
    assert_eq!(out, [4, 5, 6, 7]);

    // The limit (memory length) cuts a region.
    out.clear();
    push_region(&mut out, 0, 8192, 10, 6);
    assert_eq!(out, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn page_shift_checks() {
    assert_eq!(page_shift(1 << 20, 4096).expect("valid"), 12);
    assert!(matches!(
        page_shift(1 << 20, 3000),
        Err(DirtyError::InvalidPageSize { page_size: 3000 })
    ));
    assert!(matches!(
        page_shift(1 << 20, 0),
        Err(DirtyError::InvalidPageSize { page_size: 0 })
    ));
    assert!(matches!(
        page_shift(usize::MAX, 1),
        Err(DirtyError::TooManyPages { .. })
    ));
}

#[cfg(target_os = "linux")]
mod linux_tests {
    use std::io::Read;
    use std::time::Instant;

    use proptest::prelude::*;
    use rand_xoshiro::rand_core::{RngCore, SeedableRng};
    use rand_xoshiro::SplitMix64;

    use super::super::linux::{uapi, AnonMapping};
    use super::*;

    const OS_PAGE: usize = 4096;
    const MIB: usize = 1 << 20;

    /// Kernel tracking must work on the machines this project targets (Linux
    /// ≥ 6.7, root); set `REWIND_SKIP_KERNEL_DIRTY=1` to skip these tests
    /// elsewhere instead of failing.
    fn available() -> bool {
        match DirtyTracker::probe() {
            Availability::Available => true,
            Availability::Unavailable(why) => {
                if std::env::var_os("REWIND_SKIP_KERNEL_DIRTY").is_some() {
                    eprintln!("skipping: {why}");
                    false
                } else {
                    panic!(
                        "kernel dirty tracking unavailable ({why:?}); set REWIND_SKIP_KERNEL_DIRTY=1 to skip"
                    );
                }
            }
        }
    }

    /// Rewind pages of `page_size` covering the OS pages that contain the
    /// written byte offsets.
    fn expected(offsets: &[usize], page_size: usize, len: usize) -> Vec<u32> {
        let mut set = BTreeSet::new();
        for &off in offsets {
            let os_start = off / OS_PAGE * OS_PAGE;
            let first = os_start / page_size;
            let last = (os_start + OS_PAGE)
                .div_ceil(page_size)
                .min(len.div_ceil(page_size));
            set.extend((first..last).map(|i| i as u32));
        }
        set.into_iter().collect()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    // `libc::Ioctl` is `c_ulong` on glibc and `c_int` on musl.
    #[allow(clippy::unnecessary_cast)]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(uapi::UFFDIO_API as u64, 0xC018_AA3F);
        assert_eq!(uapi::UFFDIO_REGISTER as u64, 0xC020_AA00);
        assert_eq!(uapi::UFFDIO_WRITEPROTECT as u64, 0xC018_AA06);
        assert_eq!(uapi::USERFAULTFD_IOC_NEW as u64, 0xAA00);
        assert_eq!(uapi::PAGEMAP_SCAN as u64, 0xC060_6610);
        assert_eq!(std::mem::size_of::<uapi::PmScanArg>(), 96);
        assert_eq!(std::mem::size_of::<uapi::PageRegion>(), 24);
    }

    #[test]
    fn probe_reports_available_here() {
        let a = DirtyTracker::probe();
        eprintln!("mode: {a}");
        if std::env::var_os("REWIND_SKIP_KERNEL_DIRTY").is_none() {
            assert!(a.is_available(), "{a}");
        }
    }

    /// 64 MiB, a random set of pages written: exactly those are reported, a
    /// second call reports nothing, writes after re-protection are seen.
    #[test]
    fn reports_exactly_the_written_pages_of_64_mib() {
        if !available() {
            return;
        }
        let len = 64 * MIB;
        let mut map = AnonMapping::new(len).expect("mmap 64 MiB");
        // Half the pages populated before tracking starts, half never touched.
        for page in (0..len / OS_PAGE).step_by(2) {
            map.as_mut_slice()[page * OS_PAGE] = 0xAA;
        }
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        let mut out = Vec::new();
        tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
        assert!(out.is_empty(), "nothing written yet, got {} pages", out.len());

        let mut rng = SplitMix64::seed_from_u64(42);
        for round in 0..3 {
            let offsets: Vec<usize> = (0..160).map(|_| (rng.next_u64() % len as u64) as usize).collect();
            for &off in &offsets {
                map.as_mut_slice()[off] = round as u8 + 1;
            }
            tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
            assert_eq!(out, expected(&offsets, OS_PAGE, len), "round {round}");
            tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
            assert!(out.is_empty(), "round {round}: second call must be empty");
        }
    }

    /// More written regions than one PAGEMAP_SCAN call returns: the walk stops
    /// at `walk_end < end` and must be continued.
    #[test]
    fn scan_continues_past_a_full_output_vector() {
        if !available() {
            return;
        }
        let len = 16 * MIB;
        let mut map = AnonMapping::new(len).expect("mmap");
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        // Every other page: 2048 separate regions, 4× the per-call vector.
        let offsets: Vec<usize> = (0..len / OS_PAGE).step_by(2).map(|p| p * OS_PAGE + 5).collect();
        for &off in &offsets {
            map.as_mut_slice()[off] = 1;
        }
        let mut out = Vec::new();
        tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, expected(&offsets, OS_PAGE, len));
    }

    #[test]
    fn reads_do_not_count_as_writes() {
        if !available() {
            return;
        }
        let len = 4 * MIB;
        let mut map = AnonMapping::new(len).expect("mmap");
        map.as_mut_slice()[..len / 2].fill(3);
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        let sum: u64 = map.as_slice().iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 3 * (len as u64 / 2));
        let mut out = Vec::new();
        tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
        assert!(
            out.is_empty(),
            "reads reported as writes: {:?}",
            &out[..out.len().min(8)]
        );
    }

    /// A write by the kernel on the process's behalf (`read(2)` into the
    /// range) is tracked too.
    #[test]
    fn kernel_writes_are_tracked() {
        if !available() {
            return;
        }
        let len = MIB;
        let mut map = AnonMapping::new(len).expect("mmap");
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        let mut zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
        zero.read_exact(&mut map.as_mut_slice()[10 * OS_PAGE..12 * OS_PAGE])
            .expect("read");
        let mut out = Vec::new();
        tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, [10, 11]);
    }

    #[test]
    fn rewind_pages_larger_and_smaller_than_os_pages() {
        if !available() {
            return;
        }
        let len = 8 * MIB;
        let mut map = AnonMapping::new(len).expect("mmap");
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        let mut out = Vec::new();
        for page_size in [1024, 16384, 65536, 2048, 4096] {
            let offsets = [0, 5000, 16384 + 3, 16384 * 7 + 4095, len - 1, 3 * MIB + 12345];
            for &off in &offsets {
                map.as_mut_slice()[off] ^= 1;
            }
            tracker.take_written(len, page_size, &mut out).expect("scan");
            assert_eq!(out, expected(&offsets, page_size, len), "page size {page_size}");
        }
        // Concretely, for 16 KiB pages offset 5000 is rewind page 0 and
        // offset 16384*7+4095 is page 7; for 1 KiB pages offset 5000 is in OS
        // page 1, i.e. rewind pages 4..8.
        map.as_mut_slice()[5000] = 9;
        tracker.take_written(len, 1024, &mut out).expect("scan");
        assert_eq!(out, [4, 5, 6, 7]);
        map.as_mut_slice()[16384 * 7 + 4095] = 9;
        map.as_mut_slice()[5000] = 8;
        tracker.take_written(len, 16384, &mut out).expect("scan");
        assert_eq!(out, [0, 7]);
    }

    /// Memory growth as wasmer does it (`mprotect` to read-write inside a
    /// `PROT_NONE` reservation): within the headroom protected ahead, grown
    /// pages are exact; a growth past it reads as written once (documented
    /// superset) and never loses a write.
    #[test]
    fn grown_ranges() {
        if !available() {
            return;
        }
        let reserved = 256 * MIB;
        let map = AnonMapping::new(reserved).expect("mmap");
        let base = map.as_ptr();
        let set_prot = |from: usize, to: usize, prot| {
            // SAFETY: `from..to` lies inside `map`, which stays mapped; only
            // this test's own mapping changes protection, and no reference
            // into the affected pages is live.
            let rc = unsafe { libc::mprotect(base.add(from).cast(), to - from, prot) };
            assert_eq!(rc, 0, "mprotect: {}", std::io::Error::last_os_error());
        };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        set_prot(2 * MIB, reserved, libc::PROT_NONE);
        let mut tracker = DirtyTracker::new(base, reserved, 2 * MIB).expect("tracker");
        let write = |off: usize| {
            // SAFETY: `off` is inside the accessible part of `map`; no Rust
            // reference to the mapping is live while the byte is written.
            unsafe { base.add(off).write_volatile(7) };
        };
        let mut out = Vec::new();

        // Within the headroom: exact.
        set_prot(2 * MIB, 4 * MIB, rw);
        let written = [100, 2 * MIB + 100, 3 * MIB];
        written.iter().for_each(|&o| write(o));
        tracker.take_written(4 * MIB, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, expected(&written, OS_PAGE, 4 * MIB));

        // One jump past the headroom (protected up to 2 MiB + 64 MiB by `new`;
        // at 4 MiB more than half the headroom was left, so no extension):
        // the never-protected part reads as written once; writes are kept.
        let headroom_end = 2 * MIB + GROWTH_HEADROOM;
        set_prot(4 * MIB, 130 * MIB, rw);
        let written = [MIB, 60 * MIB + 1, 100 * MIB + 2];
        written.iter().for_each(|&o| write(o));
        tracker.take_written(130 * MIB, OS_PAGE, &mut out).expect("scan");
        let must = expected(&written, OS_PAGE, 130 * MIB);
        assert!(must.iter().all(|p| out.contains(p)), "a write was lost");
        let never_protected = (headroom_end / OS_PAGE) as u32..(130 * MIB / OS_PAGE) as u32;
        assert!(
            out.iter()
                .all(|p| must.contains(p) || never_protected.contains(p)),
            "a page inside the protected range was reported without a write"
        );
        eprintln!(
            "growth past the headroom: {} pages reported, {} written, {} never protected",
            out.len(),
            must.len(),
            never_protected.len()
        );
        tracker.take_written(130 * MIB, OS_PAGE, &mut out).expect("scan");
        assert!(
            out.is_empty(),
            "the scan must protect the grown range: {} pages",
            out.len()
        );

        // The scan protected ahead again: the next growth is exact.
        set_prot(130 * MIB, 150 * MIB, rw);
        let written = [140 * MIB + 9, 149 * MIB];
        written.iter().for_each(|&o| write(o));
        tracker.take_written(150 * MIB, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, expected(&written, OS_PAGE, 150 * MIB));

        // An explicit protect of a fresh range before any write is harmless.
        set_prot(150 * MIB, 152 * MIB, rw);
        tracker.protect(150 * MIB, 2 * MIB).expect("protect");
        write(151 * MIB);
        tracker.take_written(152 * MIB, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, [(151 * MIB / OS_PAGE) as u32]);
    }

    /// A transparent huge page is split on the first write after protection,
    /// so the report stays at 4 KiB granularity.
    #[test]
    fn transparent_huge_pages_stay_exact() {
        if !available() {
            return;
        }
        let huge = 2 * MIB;
        let mut map = AnonMapping::new(3 * huge).expect("mmap");
        let aligned = (map.as_ptr() as usize).next_multiple_of(huge);
        let offset = aligned - map.as_ptr() as usize;
        // SAFETY: `aligned..aligned + huge` lies inside `map`; madvise only
        // changes the kernel's backing policy.
        let rc = unsafe { libc::madvise(aligned as *mut libc::c_void, huge, libc::MADV_HUGEPAGE) };
        assert_eq!(rc, 0);
        map.as_mut_slice()[offset..offset + huge].fill(1);
        let mut tracker = DirtyTracker::new(aligned as *mut u8, huge, huge).expect("tracker");
        map.as_mut_slice()[offset + 300 * OS_PAGE + 17] = 2;
        let mut out = Vec::new();
        tracker.take_written(huge, OS_PAGE, &mut out).expect("scan");
        assert_eq!(out, [300]);
    }

    #[test]
    fn typed_errors() {
        if !available() {
            return;
        }
        let len = MIB;
        let map = AnonMapping::new(len).expect("mmap");
        // The tracker never dereferences the pointer; it only checks alignment.
        let misaligned = map.as_ptr().wrapping_add(1);
        assert!(matches!(
            DirtyTracker::new(misaligned, len, 0),
            Err(DirtyError::Misaligned { .. })
        ));
        assert!(matches!(
            DirtyTracker::new(map.as_ptr(), len, 2 * len),
            Err(DirtyError::OutOfRange { .. })
        ));
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        let mut out = Vec::new();
        assert!(matches!(
            tracker.take_written(len, 3000, &mut out),
            Err(DirtyError::InvalidPageSize { .. })
        ));
        assert!(matches!(
            tracker.take_written(2 * len, 4096, &mut out),
            Err(DirtyError::OutOfRange { .. })
        ));
        assert!(matches!(
            tracker.protect(len - 1, 2),
            Err(DirtyError::OutOfRange { .. })
        ));
        // A second userfaultfd cannot register the same range.
        let second = DirtyTracker::new(map.as_ptr(), len, len);
        assert!(matches!(second, Err(DirtyError::Register { .. })), "{second:?}");
        // After the memory is unmapped the scan finds no mapping and reports
        // nothing; once another mapping takes the address, the scan fails
        // (PM_SCAN_CHECK_WPASYNC: a page not registered in WP-async mode).
        let addr = map.as_ptr();
        drop(map);
        match tracker.take_written(len, 4096, &mut out) {
            Ok(()) => assert!(out.is_empty(), "an unmapped range reports no written pages"),
            // Tests run on several threads of one process: another test may map
            // memory at the freed address before the scan, which is the case below.
            Err(DirtyError::Scan { .. }) => {}
            Err(e) => panic!("unexpected error scanning an unmapped range: {e:?}"),
        }
        // SAFETY: maps fresh anonymous memory at the address just unmapped;
        // MAP_FIXED_NOREPLACE fails instead of replacing any other mapping.
        let again = unsafe {
            libc::mmap(
                addr.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if again == addr.cast() {
            let after = tracker.take_written(len, 4096, &mut out);
            assert!(matches!(after, Err(DirtyError::Scan { .. })), "{after:?}");
            // SAFETY: unmaps the mapping made just above; nothing borrows it.
            unsafe { libc::munmap(again, len) };
        } else if again != libc::MAP_FAILED {
            // SAFETY: as above; the kernel placed it elsewhere.
            unsafe { libc::munmap(again, len) };
        }
    }

    /// Cost printout of the tracker and of reading/writing globals (run with `--ignored --nocapture`).
    #[test]
    #[ignore = "timing printout, run explicitly"]
    fn measure_costs() {
        if !available() {
            return;
        }
        let len = 64 * MIB;
        let mut map = AnonMapping::new(len).expect("mmap");
        map.as_mut_slice().fill(1); // populated, as a live guest's memory is
        let t = Instant::now();
        let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
        eprintln!("new (open+register+protect 64 MiB, populated): {:?}", t.elapsed());
        let unpop = AnonMapping::new(len).expect("mmap");
        let t = Instant::now();
        let tracker2 = DirtyTracker::new(unpop.as_ptr(), len, len).expect("tracker");
        eprintln!(
            "new (open+register+protect 64 MiB, unpopulated): {:?}",
            t.elapsed()
        );
        drop(tracker2);
        let t = Instant::now();
        let probe = DirtyTracker::probe();
        eprintln!("probe: {:?} ({probe})", t.elapsed());

        let mut out = Vec::new();
        let mut rng = SplitMix64::seed_from_u64(7);
        for dirty in [0usize, 160, 1000, 16384] {
            let mut best = std::time::Duration::MAX;
            let mut write_cost = std::time::Duration::ZERO;
            for _ in 0..20 {
                let pages: Vec<usize> = if dirty == 16384 {
                    (0..16384).collect()
                } else {
                    (0..dirty)
                        .map(|_| (rng.next_u64() % (len / OS_PAGE) as u64) as usize)
                        .collect()
                };
                let t = Instant::now();
                for &p in &pages {
                    map.as_mut_slice()[p * OS_PAGE] ^= 1;
                }
                write_cost = t.elapsed();
                let t = Instant::now();
                tracker.take_written(len, OS_PAGE, &mut out).expect("scan");
                best = best.min(t.elapsed());
            }
            eprintln!(
                "64 MiB, {dirty} dirty pages: scan+reprotect best of 20 = {best:?}; first writes to those pages took {write_cost:?} ({} reported)",
                out.len()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Model: the set of OS pages written in each round, mapped to rewind
        /// pages of a random power-of-two size.
        #[test]
        fn matches_a_model_of_written_pages(
            rounds in prop::collection::vec(prop::collection::vec(0usize..4 * MIB, 0..200), 1..5),
            shift in 10u32..17,
        ) {
            if !available() {
                return Ok(());
            }
            let len = 4 * MIB;
            let page_size = 1usize << shift;
            let mut map = AnonMapping::new(len).expect("mmap");
            let mut tracker = DirtyTracker::new(map.as_ptr(), len, len).expect("tracker");
            let mut out = Vec::new();
            for offsets in rounds {
                for &off in &offsets {
                    map.as_mut_slice()[off] = map.as_slice()[off].wrapping_add(1);
                }
                tracker.take_written(len, page_size, &mut out).expect("scan");
                prop_assert_eq!(&out, &expected(&offsets, page_size, len));
            }
        }
    }
}
