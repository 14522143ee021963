//! A fixed set of results (every peer, every optional figure present and absent) for
//! the tests of the report's format.

use rewind_bench::Placement;

use crate::peers::{Batched, GitRun, Peer, PeerRun, Pipelined, Rewind, SerdeRun};
use crate::workload::{Spec, WorkloadResult};
use crate::{MIB, PAGE};

fn v(base: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| base * (1.0 + (i as f64 * 0.37) % 1.0)).collect()
}

fn peer(peer: Peer, k: f64) -> PeerRun {
    PeerRun {
        capture: v(k, 40),
        first_frame_ms: 10.0 * k,
        restore: v(2.0 * k, 5),
        window_bytes: None,
        ..PeerRun::new(peer)
    }
}

fn rewind(k: f64, filled: bool) -> Rewind {
    Rewind {
        capture_only: v(k, 40),
        gc_step: v(k / 3.0, 30),
        gc_after_window: filled,
        growth: vec![(25, 1_000_000, 900_000), (50, 2_000_000, 1_900_000)],
        resident: 123_456_789,
        rss_delta: filled.then_some(150_000_000),
        window_frames: if filled { 600 } else { 150 },
        restored_pages: if filled { vec![100, 120] } else { Vec::new() },
        restored_memcpy: if filled { vec![0.02, 0.03] } else { Vec::new() },
    }
}

fn pipe(blocked: u64, full: bool) -> Pipelined {
    Pipelined {
        caller: v(0.05, 50),
        sync: v(0.4, 50),
        worker_busy: 0.35,
        worker_cpu: full.then_some(0.3),
        caller_cpu: if full { v(0.04, 50) } else { Vec::new() },
        sync_cpu: if full { v(0.38, 50) } else { Vec::new() },
        blocked,
        drain_ms: 1.5,
        frames: 49,
        ggrs_sync: v(3.0, 20),
        ggrs_pipe: v(4.0, 20),
        ggrs_wait: 1.2,
        ggrs_sync_cpu: v(2.5, 20),
        ggrs_pipe_cpu: v(1.5, 20),
        ggrs_worker_cpu: full.then_some(2.2),
    }
}

/// Four workloads: 64 MiB at 1 % with every peer, git and the pipeline; 170 MB with
/// a pipeline that fell behind and no core peers; 64 MiB at 0.1 % whose window never
/// filled; a globals-heavy guest with the archive peer only.
pub fn results() -> Vec<WorkloadResult> {
    let m64 = 64 * MIB;
    let one = Spec::synthetic(m64, 164, Placement::Clustered, 650, 60);
    let mut lz = peer(Peer::Lz4, 70.0);
    lz.window_bytes = Some(9e9);
    lz.window_note = "computed W × mean frame";
    lz.disk_per_frame = Some(3e7);
    lz.open_read = v(40.0, 5);
    let mut ring = peer(Peer::Ring, 9.0);
    ring.window_bytes = Some((600 * m64) as f64);
    ring.window_note = "computed W × M";
    let mut arch = peer(Peer::Archive, 0.5);
    arch.disk_per_frame = Some(300_000.0);
    arch.disk_first = Some(3e7);
    arch.open_read = v(30.0, 5);
    arch.open_read_pages = v(31.0, 5);
    arch.ingest_s = Some(1.25);
    // Appends with one preempted (wall) and one checkpoint (CPU too); no batched file.
    arch.append = v(0.4, 40);
    arch.append[7] = 4.5;
    arch.append[20] = 1.1;
    arch.append_cpu = v(0.38, 40);
    arch.append_cpu[20] = 1.05;
    let git_peer = PeerRun {
        disk_per_frame: Some(500_000.0),
        open_read: v(400.0, 5),
        ingest_s: Some(130.0),
        ..PeerRun::new(Peer::Git)
    };
    let mut hint = peer(Peer::Hint, 0.3);
    hint.window_bytes = Some(123_456_789.0);
    hint.window_note = "measured resident_bytes";
    let scan = peer(Peer::Scan, 3.0);
    let r1 = WorkloadResult {
        spec: one,
        memory: m64,
        pages: m64 / PAGE,
        mean_dirty: 163.6,
        xxh3: v(2.5, 15),
        memcpy: v(5.0, 15),
        peers: vec![ring, peer(Peer::Hash, 11.0), lz, hint, scan, arch, git_peer],
        hinted: rewind(0.2, true),
        scan: rewind(2.0, true),
        git: Some(GitRun {
            frames: 60,
            ingest_s: 10.0,
            gc_s: 120.0,
            pack_bytes: 40_000_000,
            idx_bytes: 2_000_000,
            read: v(400.0, 5),
            archive_ingest_s: 0.9,
            archive_bytes: 35_000_000,
            archive_read: v(30.0, 5),
            read_frame: 30,
        }),
        serde: Some(SerdeRun {
            records: 650,
            objects: 30_000,
            blob_bytes: 1_500_000,
            archive_bytes: 200_000_000,
            rkyv: v(0.01, 15),
            postcard: v(12.0, 15),
        }),
        pipe: Some(pipe(0, true)),
    };
    let big = Spec::synthetic(170 * MIB, 1500, Placement::Clustered, 150, 0);
    let r2 = WorkloadResult {
        spec: big,
        memory: 170 * MIB,
        pages: 43_520,
        mean_dirty: 1490.0,
        xxh3: v(7.0, 15),
        memcpy: v(14.0, 15),
        peers: vec![peer(Peer::Ring, 25.0), peer(Peer::Hint, 2.0)],
        hinted: rewind(1.9, false),
        scan: Rewind::default(),
        git: None,
        serde: None,
        pipe: Some(pipe(3, false)),
    };
    let small = Spec::synthetic(m64, 16, Placement::Scattered, 150, 0);
    let r3 = WorkloadResult {
        spec: small,
        memory: m64,
        pages: m64 / PAGE,
        mean_dirty: 16.0,
        xxh3: v(2.4, 15),
        memcpy: v(4.9, 15),
        peers: vec![
            peer(Peer::Ring, 9.5),
            peer(Peer::Hint, 0.05),
            peer(Peer::Scan, 2.9),
        ],
        hinted: rewind(0.04, false),
        scan: rewind(2.8, false),
        git: None,
        serde: None,
        pipe: None,
    };
    let r4 = globals_heavy();
    vec![r1, r2, r3, r4]
}

/// A guest whose state is mostly globals, with the archive peer only (and its
/// every-8-frames file).
fn globals_heavy() -> WorkloadResult {
    let mut arch = peer(Peer::Archive, 0.05);
    arch.disk_per_frame = Some(620.0);
    arch.disk_first = Some(40_000.0);
    arch.page_bytes_per_frame = Some(31.0);
    arch.index_bytes_per_frame = Some(450.0);
    arch.append = v(0.1, 40);
    arch.append_cpu = v(0.09, 40);
    arch.batched = Some(Batched {
        every: 8,
        commit: v(0.2, 5),
        commit_cpu: v(0.18, 5),
        frames: 40,
        disk_per_frame: 300.0,
        page_bytes_per_frame: 31.0,
        index_bytes_per_frame: 110.0,
    });
    WorkloadResult {
        spec: Spec::synthetic(4 * MIB, 2, Placement::Clustered, 300, 0).with_globals(232, 8),
        memory: 4 * MIB,
        pages: 1024,
        mean_dirty: 2.0,
        xxh3: v(0.2, 15),
        memcpy: v(0.3, 15),
        peers: vec![arch],
        hinted: Rewind {
            growth: Vec::new(),
            ..rewind(0.06, false)
        },
        scan: Rewind::default(),
        git: None,
        serde: None,
        pipe: None,
    }
}
