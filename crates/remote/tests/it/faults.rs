//! Failures against real Garage servers on 127.0.0.1: the network cut in the middle
//! of an upload (a proxy between the client and the server), and a node of a
//! three-node cluster killed during pushes. Nothing acknowledged is lost, and a failed
//! push leaves the remote at its last published head.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::ObjectStore;
use rewind_remote::garage::{Garage, GarageCluster};
use rewind_remote::{PullOptions, PushOptions, Remote, RemoteError};

use crate::proxy::Proxy;
use crate::{assert_same_archive, stores, Recording};

const PART: u64 = 16 * 1024;

/// A failed push must come back well within this (retries and timeouts bound it).
const BOUND: Duration = Duration::from_secs(30);

fn garage() -> Garage {
    match Garage::start() {
        Ok(g) => g,
        Err(e) => panic!("cannot start a Garage server for the S3 tests: {e}"),
    }
}

/// A remote of `g` whose requests go through `proxy`.
fn through(g: &Garage, proxy: &Proxy, key: &str) -> Remote {
    let mut s = g.settings();
    for (k, v) in &mut s {
        if *k == "aws_endpoint" {
            *v = proxy.endpoint();
        }
    }
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Remote::open_with(&format!("s3://{}/{key}", g.bucket), &pairs)
        .expect("remote")
        .part_size(PART)
}

/// The part objects stored under a generation, listed straight from the server.
fn stored_parts(store: &Arc<dyn ObjectStore>, r: &Remote, generation: &str) -> Vec<String> {
    let prefix = r.generation_key(generation);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let metas: Vec<_> = rt
        .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .expect("list");
    metas.into_iter().map(|m| m.location.to_string()).collect()
}

/// A three-node Garage cluster, and a store through its node 0 that kills the nodes
/// `victims` (in order, with SIGKILL) when armed ([`stores::OnPut::arm`]).
fn cluster_killing(victims: &'static [usize]) -> (Arc<GarageCluster>, Arc<stores::OnPut>) {
    let cluster = match GarageCluster::start(3) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("cannot start a three-node Garage cluster: {e}"),
    };
    let killer = cluster.clone();
    let fault = Arc::new(stores::OnPut::new(
        cluster.store(0).expect("store"),
        Box::new(move || {
            for &i in victims {
                killer.kill(i).unwrap_or_else(|e| panic!("kill node {i}: {e}"));
            }
        }),
    ));
    (cluster, fault)
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy");
}

#[test]
fn garage_network_cut_mid_upload_keeps_the_old_head_and_the_next_push_resumes() {
    let g = garage();
    let proxy = Proxy::start(&g.endpoint);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 41);
    rec.frames(100);
    let r = through(&g, &proxy, "games/cut.rwd");
    r.push(&rec.path, PushOptions::default()).expect("first push");
    let earlier = dir.path().join("earlier.rwd");
    copy(&rec.path, &earlier);
    let before = rec.len();

    rec.frames(400);
    let new = rec.len() - before;
    let new_parts = new.div_ceil(PART);
    assert!(
        new_parts >= 4,
        "{new} new bytes: too few parts for a cut in the middle"
    );
    // Cut once about half the new bytes have gone through: inside a part's PUT.
    proxy.cut_after(new / 2);
    let started = Instant::now();
    let err = r
        .push(&rec.path, PushOptions::default())
        .expect_err("the cut fails the push");
    let took = started.elapsed();
    assert!(proxy.is_cut(), "the budget was spent");
    assert!(took < BOUND, "the failed push took {took:?}");
    assert!(
        matches!(&err, RemoteError::Store { op: "put", location, .. } if location.contains("/g-")),
        "a failed part upload, not {err:?}"
    );

    // Straight from the server: the head still names the earlier, complete state.
    let direct = g.remote("games/cut.rwd").expect("remote").part_size(PART);
    let head = direct.head().expect("head").expect("the earlier head");
    assert_eq!(head.len, before);
    let pulled = dir.path().join("pulled.rwd");
    direct
        .pull(&pulled, PullOptions::default())
        .expect("pull the earlier state");
    assert_same_archive(&earlier, &pulled);

    // Some of the new parts reached the server before the cut, not all of them.
    let store = g.store(&g.bucket).expect("store");
    let stored = stored_parts(&store, &direct, &head.generation).len() as u64;
    let landed = stored - head.parts.len() as u64;
    assert!(
        (1..new_parts).contains(&landed),
        "{landed} of {new_parts} new parts landed before the cut"
    );

    // Healed: the next push sends only the parts that did not land.
    proxy.heal();
    let pushed = r
        .push(&rec.path, PushOptions::default())
        .expect("push after healing");
    assert_eq!(pushed.parts_resumed, landed);
    assert_eq!(pushed.parts_sent, new_parts - landed);
    assert_eq!(pushed.data_bytes_sent, new - landed * PART);
    direct
        .pull(&pulled, PullOptions::default())
        .expect("pull the rest");
    assert_same_archive(&rec.path, &pulled);
}

#[test]
fn garage_network_cut_during_a_first_push_publishes_nothing() {
    let g = garage();
    let proxy = Proxy::start(&g.endpoint);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 42);
    rec.frames(400);
    let len = rec.len();
    let parts = len.div_ceil(PART);
    let r = through(&g, &proxy, "games/first.rwd");
    proxy.cut_after(len / 2);
    let started = Instant::now();
    let err = r.push(&rec.path, PushOptions::default()).expect_err("cut");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(matches!(&err, RemoteError::Store { op: "put", .. }), "{err:?}");

    // No head: a reader finds no archive, and its pull creates nothing.
    let direct = g.remote("games/first.rwd").expect("remote").part_size(PART);
    assert_eq!(direct.head().expect("head"), None);
    let pulled = dir.path().join("pulled.rwd");
    let err = direct.pull(&pulled, PullOptions::default()).expect_err("nothing");
    assert!(matches!(err, RemoteError::NoArchive { .. }), "{err:?}");
    assert!(!pulled.exists());

    // Refused outright (every new connection closed at once): a clear error, fast.
    proxy.cut_now();
    let accepted = proxy.accepted();
    let started = Instant::now();
    let err = r.push(&rec.path, PushOptions::default()).expect_err("refused");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(matches!(&err, RemoteError::Store { op: "get", .. }), "{err:?}");
    assert!(proxy.accepted() > accepted, "the client did try");

    proxy.heal();
    let pushed = r
        .push(&rec.path, PushOptions::default())
        .expect("push after healing");
    assert!(pushed.parts_resumed >= 1, "{pushed:?}");
    assert_eq!(pushed.parts_resumed + pushed.parts_sent, parts);
    direct.pull(&pulled, PullOptions::default()).expect("pull");
    assert_same_archive(&rec.path, &pulled);
}

#[test]
fn garage_cluster_losing_a_node_during_pushes_loses_nothing_acknowledged() {
    // The writer goes through node 0; node 2 is killed in the middle of the third
    // push, just before its second part PUT.
    let (cluster, fault) = cluster_killing(&[2]);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 43);
    let url = format!("s3://{}/games/cluster.rwd", cluster.bucket);
    let writer = Remote::with_store(fault.clone(), &url)
        .expect("remote")
        .part_size(PART);
    // A reader through node 1, which survives.
    let reader = cluster.remote(1, "games/cluster.rwd").expect("remote");
    let check = dir.path().join("check.rwd");
    let mut acked: Option<std::path::PathBuf> = None;
    let mut heads = Vec::new();
    for push in 0..6 {
        rec.frames(120);
        if push == 2 {
            fault.arm(2);
        }
        let started = Instant::now();
        let outcome = writer.push(&rec.path, PushOptions::default());
        assert!(
            started.elapsed() < BOUND,
            "push {push} took {:?}",
            started.elapsed()
        );
        match outcome {
            Ok(report) => {
                assert!(report.parts_sent >= 2, "push {push}: {report:?}");
                let copy = dir.path().join(format!("ack-{push}.rwd"));
                std::fs::copy(&rec.path, &copy).expect("copy");
                acked = Some(copy);
                heads.push(reader.head().expect("head").expect("a head"));
            }
            // Only the push in flight at the kill may fail, and with a clear error.
            Err(e) => assert!(
                push == 2 && matches!(e, RemoteError::Store { .. }),
                "push {push}: {e:?}"
            ),
        }
        // After every push, a reader on a surviving node sees the last acknowledged
        // state, whole.
        let last = acked.as_ref().expect("the first push is acknowledged");
        reader
            .pull(&check, PullOptions::default())
            .unwrap_or_else(|e| panic!("pull after push {push}: {e:?}"));
        assert_same_archive(last, &check);
    }
    assert!(fault.fired(), "node 2 was killed");
    let dead = cluster.remote(2, "games/cluster.rwd").expect("remote").head();
    assert!(dead.is_err(), "node 2 no longer answers: {dead:?}");
    assert!(
        heads.len() >= 5,
        "pushes after the kill are acknowledged: {}",
        heads.len()
    );
    // Every acknowledged head is a prefix of the last one: its parts are all readable.
    let last = heads.last().expect("heads");
    for h in &heads {
        assert_eq!(h.generation, last.generation);
        assert_eq!(h.parts[..], last.parts[..h.parts.len()]);
    }
    // And through node 0 as well, from scratch.
    let whole = dir.path().join("whole.rwd");
    cluster
        .remote(0, "games/cluster.rwd")
        .expect("remote")
        .pull(&whole, PullOptions::default())
        .expect("pull through node 0");
    assert_same_archive(&rec.path, &whole);
}

/// A link that goes silent (no reset, no close) is only noticed by the request
/// timeout: `aws_timeout`, 120 s by default (`Remote::open_with`); here 4 s, so the
/// push gives up after three timed-out attempts.
#[test]
fn garage_network_stall_mid_upload_is_bounded_by_the_request_timeout() {
    let g = garage();
    let proxy = Proxy::start(&g.endpoint);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 44);
    rec.frames(200);
    let mut s = g.settings();
    for (k, v) in &mut s {
        if *k == "aws_endpoint" {
            *v = proxy.endpoint();
        }
    }
    s.push(("aws_timeout", "4s".into()));
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = Remote::open_with(&format!("s3://{}/games/stall.rwd", g.bucket), &pairs)
        .expect("remote")
        .part_size(PART);
    proxy.stall_after(rec.len() / 2);
    let started = Instant::now();
    let err = r.push(&rec.path, PushOptions::default()).expect_err("stalled");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(
        matches!(&err, RemoteError::Store { op: "put", .. }) && format!("{err:?}").contains("Timeout"),
        "{err:?}"
    );
    let direct = g.remote("games/stall.rwd").expect("remote");
    assert_eq!(direct.head().expect("head"), None, "nothing published");
    proxy.heal();
    let pushed = r
        .push(&rec.path, PushOptions::default())
        .expect("push after healing");
    assert!(pushed.parts_resumed >= 1, "{pushed:?}");
    let pulled = dir.path().join("pulled.rwd");
    direct.pull(&pulled, PullOptions::default()).expect("pull");
    assert_same_archive(&rec.path, &pulled);
}

#[test]
fn garage_cluster_losing_the_writers_node_mid_push_fails_clearly_and_another_node_takes_over() {
    // The writer goes through node 0, which is killed in the middle of the second
    // push, just before its second part PUT.
    let (cluster, fault) = cluster_killing(&[0]);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 45);
    let url = format!("s3://{}/games/writer.rwd", cluster.bucket);
    // One PUT at a time: the part before the kill has landed when the kill comes.
    let writer = Remote::with_store(fault.clone(), &url)
        .expect("remote")
        .part_size(PART)
        .concurrency(1);
    rec.frames(120);
    writer
        .push(&rec.path, PushOptions::default())
        .expect("first push");
    let acked = dir.path().join("ack.rwd");
    copy(&rec.path, &acked);
    let before = rec.len();

    rec.frames(120);
    fault.arm(2);
    let started = Instant::now();
    let err = writer
        .push(&rec.path, PushOptions::default())
        .expect_err("the writer's node is gone");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(fault.fired(), "node 0 was killed");
    assert!(matches!(&err, RemoteError::Store { op: "put", .. }), "{err:?}");

    // The survivors still serve the last acknowledged state, whole.
    let other = cluster
        .remote(1, "games/writer.rwd")
        .expect("remote")
        .part_size(PART);
    let check = dir.path().join("check.rwd");
    other
        .pull(&check, PullOptions::default())
        .expect("pull through node 1");
    assert_same_archive(&acked, &check);

    // The writer moves to node 1: the part acknowledged before the kill is not sent
    // again, and node 2 serves the result.
    let pushed = other
        .push(&rec.path, PushOptions::default())
        .expect("push through node 1");
    let new_parts = (rec.len() - before).div_ceil(PART);
    assert_eq!(pushed.parts_resumed, 1, "{pushed:?}");
    assert_eq!(pushed.parts_sent, new_parts - 1, "{pushed:?}");
    let whole = dir.path().join("whole.rwd");
    cluster
        .remote(2, "games/writer.rwd")
        .expect("remote")
        .pull(&whole, PullOptions::default())
        .expect("pull through node 2");
    assert_same_archive(&rec.path, &whole);
}

/// Retry `f` for up to a minute: a restarted node rejoins its peers within seconds.
fn eventually<T, E: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn garage_cluster_losing_the_quorum_mid_push_fails_clearly_and_loses_nothing_acknowledged() {
    // The writer goes through node 0; nodes 1 and 2 are killed in the middle of the
    // second push, just before its second part PUT: one node of three is left, below
    // the write quorum of two.
    let (cluster, fault) = cluster_killing(&[1, 2]);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 47);
    let url = format!("s3://{}/games/quorum.rwd", cluster.bucket);
    // One PUT at a time: the part before the kill has landed when the kill comes.
    let writer = Remote::with_store(fault.clone(), &url)
        .expect("remote")
        .part_size(PART)
        .concurrency(1);
    rec.frames(120);
    writer
        .push(&rec.path, PushOptions::default())
        .expect("first push");
    let acked = dir.path().join("ack.rwd");
    copy(&rec.path, &acked);
    let acked_head = writer.head().expect("head").expect("a head");
    let before = rec.len();

    rec.frames(120);
    fault.arm(2);
    let started = Instant::now();
    let err = writer
        .push(&rec.path, PushOptions::default())
        .expect_err("no quorum is left to acknowledge a write");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(fault.fired(), "nodes 1 and 2 were killed");
    assert!(matches!(&err, RemoteError::Store { .. }), "{err:?}");
    // Without a quorum the last node cannot answer a read either: an error, never a
    // head it cannot vouch for.
    let started = Instant::now();
    let read = writer.head();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(matches!(&read, Err(RemoteError::Store { .. })), "{read:?}");

    // The killed nodes come back on their data: the remote is where the last
    // acknowledged push left it.
    cluster.restart(1).expect("restart node 1");
    cluster.restart(2).expect("restart node 2");
    let head = eventually("head through node 0", || writer.head());
    assert_eq!(head.as_ref(), Some(&acked_head));
    let reader = cluster
        .remote(2, "games/quorum.rwd")
        .expect("remote")
        .part_size(PART);
    let check = dir.path().join("check.rwd");
    eventually("pull through node 2", || {
        reader.pull(&check, PullOptions::default())
    });
    assert_same_archive(&acked, &check);

    // The interrupted push resumes: the part acknowledged before the quorum was lost
    // is not sent again, and the whole archive reads back through node 1.
    let pushed = eventually("push through node 0", || {
        writer.push(&rec.path, PushOptions::default())
    });
    let new_parts = (rec.len() - before).div_ceil(PART);
    assert_eq!(pushed.parts_resumed, 1, "{pushed:?}");
    assert_eq!(pushed.parts_sent, new_parts - 1, "{pushed:?}");
    let whole = dir.path().join("whole.rwd");
    eventually("pull through node 1", || {
        cluster
            .remote(1, "games/quorum.rwd")
            .expect("remote")
            .pull(&whole, PullOptions::default())
    });
    assert_same_archive(&rec.path, &whole);
}
