//! [`CapturePreference::Auto`](super::CapturePreference::Auto)'s choice, capture by
//! capture, between kernel dirty pages and a full scan.
//!
//! Kernel tracking pays a write fault for the first write to each page in a frame and a
//! scan that re-protects what was written: for a guest that writes most of its pages
//! every frame (a JavaScript engine with a moving collector), that is work on top of
//! hashing nearly everything anyway. After [`HIGH_RUN`] captures in a row that found
//! more than half the pages written, the session stops re-protecting (written pages then
//! stay writable: no more faults) and hashes every page. Every [`REPROBE_EVERY`]
//! full-scan captures it re-arms the tracker at a capture (which hashes every page, so
//! nothing written while suspended is missed) and lets the next captures measure the
//! write rate again: back to kernel pages when it fell.

/// Captures in a row with more than half of the pages written before Auto stops
/// kernel tracking.
pub(crate) const HIGH_RUN: u32 = 3;

/// Full-scan captures between two probes of the write rate.
pub(crate) const REPROBE_EVERY: u32 = 64;

/// The state of Auto's choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Adapt {
    /// Kernel mode: captures in a row that found most pages written.
    high_run: u32,
    /// Suspended: full-scan captures since the suspension or the last probe.
    scans: u32,
}

impl Adapt {
    /// Kernel mode, after a capture that found `written` of `pages` pages written:
    /// true when kernel tracking should be suspended from the next capture on.
    pub(crate) fn after_kernel_capture(&mut self, written: usize, pages: usize) -> bool {
        if written.saturating_mul(2) > pages {
            self.high_run += 1;
        } else {
            self.high_run = 0;
        }
        if self.high_run >= HIGH_RUN {
            *self = Adapt::default();
            return true;
        }
        false
    }

    /// Suspended, before a full-scan capture: true when this capture should re-arm the
    /// tracker (the captures after it then measure the write rate with kernel pages).
    pub(crate) fn before_scan_capture(&mut self) -> bool {
        self.scans += 1;
        if self.scans >= REPROBE_EVERY {
            *self = Adapt::default();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_captures_of_mostly_written_memory_suspend_tracking() {
        let mut a = Adapt::default();
        assert!(!a.after_kernel_capture(90, 100));
        assert!(!a.after_kernel_capture(90, 100));
        // A quiet frame resets the run.
        assert!(!a.after_kernel_capture(10, 100));
        assert!(!a.after_kernel_capture(51, 100));
        assert!(!a.after_kernel_capture(100, 100));
        assert!(a.after_kernel_capture(99, 100));
        // Exactly half is not "most".
        let mut b = Adapt::default();
        for _ in 0..10 {
            assert!(!b.after_kernel_capture(50, 100));
        }
    }

    #[test]
    fn a_suspended_session_probes_again_every_reprobe_every_scans() {
        let mut a = Adapt::default();
        for round in 0..3 {
            for i in 1..REPROBE_EVERY {
                assert!(!a.before_scan_capture(), "round {round}, scan {i}");
            }
            assert!(a.before_scan_capture(), "round {round}");
        }
    }
}
