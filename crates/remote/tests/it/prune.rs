//! `Remote::prune`: what a rewrite or an interrupted push left behind is deleted,
//! what the head names (and anything foreign) never is.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rewind_remote::{PruneOptions, PullOptions, PushOptions, RemoteError};

use crate::{assert_same_archive, memory_remote, stores, Recording};

const NOW: PruneOptions = PruneOptions {
    grace: Duration::ZERO,
    leftovers: false,
    dry_run: false,
};

/// Every object key under the store, sorted.
fn keys(store: &Arc<InMemory>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let mut k: Vec<String> = rt
        .block_on(store.list(None).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn prune_deletes_the_generations_a_rewrite_left_and_nothing_the_head_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 61);
    rec.frames(80);
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store.clone());
    let first = remote.push(&rec.path, PushOptions::default()).expect("push");
    let gen0 = remote.head().expect("head").expect("a head").generation;
    let path = rec.path.clone();
    drop(rec);
    rewind_archive::compact(&path, &rewind_gc::Policy::default().keep_last(10)).expect("gc");
    remote.push(&path, PushOptions::default()).expect("push after gc");
    let head = remote.head().expect("head").expect("a head");
    assert_ne!(head.generation, gen0);
    let old: Vec<String> = keys(&store)
        .into_iter()
        .filter(|k| k.contains(&format!("/g-{gen0}/")))
        .collect();
    assert_eq!(old.len() as u64, first.parts_sent);

    // Within the grace period nothing goes.
    let r = remote.prune(PruneOptions::default()).expect("prune");
    assert_eq!((r.deleted, r.kept_recent), (0, first.parts_sent), "{r:?}");
    // A dry run counts and deletes nothing.
    let before = keys(&store);
    let dry = remote
        .prune(PruneOptions { dry_run: true, ..NOW })
        .expect("dry run");
    assert_eq!(dry.deleted, first.parts_sent, "{dry:?}");
    assert_eq!(dry.deleted_bytes, first.data_bytes_sent, "{dry:?}");
    assert_eq!(keys(&store), before);

    let r = remote.prune(NOW).expect("prune");
    assert_eq!(r.deleted, first.parts_sent, "{r:?}");
    assert_eq!(
        r.live,
        head.parts.len() as u64 + 1,
        "the parts and the head: {r:?}"
    );
    assert_eq!(r.requests, 3, "a GET, a LIST and one bulk delete: {r:?}");
    let after = keys(&store);
    assert!(after.iter().all(|k| !old.contains(k)), "{after:?}");
    assert_eq!(after.len(), head.parts.len() + 1);
    // The remote still reads whole, and a second prune finds nothing.
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_same_archive(&path, &copy);
    let again = remote.prune(NOW).expect("prune again");
    assert_eq!((again.deleted, again.kept_recent), (0, 0), "{again:?}");
}

#[test]
fn prune_keeps_an_interrupted_pushs_parts_unless_asked_and_never_foreign_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 62);
    rec.frames(60);
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store.clone());
    remote.push(&rec.path, PushOptions::default()).expect("push");
    rec.frames(150);
    let failing = Arc::new(stores::FailAfter::new(store.clone(), 3));
    memory_remote(failing)
        .push(&rec.path, PushOptions::default())
        .expect_err("the store fails after three parts");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let foreign = StorePath::from("games/match.rwd/notes.txt");
    rt.block_on(store.put(&foreign, PutPayload::from_static(b"kept")))
        .expect("put a foreign object");

    let r = remote.prune(NOW).expect("prune");
    assert_eq!((r.deleted, r.kept_leftovers, r.foreign), (0, 3, 1), "{r:?}");
    // Kept, they spare the next push three parts.
    let resumed = remote
        .push(&rec.path, PushOptions::default())
        .expect("resumed push");
    assert_eq!(resumed.parts_resumed, 3, "{resumed:?}");

    // Interrupted again, then pruned with `leftovers`: the next push sends it all.
    rec.frames(150);
    let failing = Arc::new(stores::FailAfter::new(store.clone(), 2));
    memory_remote(failing)
        .push(&rec.path, PushOptions::default())
        .expect_err("the store fails after two parts");
    let r = remote
        .prune(PruneOptions {
            leftovers: true,
            ..NOW
        })
        .expect("prune");
    assert_eq!((r.deleted, r.kept_leftovers, r.foreign), (2, 0, 1), "{r:?}");
    let pushed = remote.push(&rec.path, PushOptions::default()).expect("push");
    assert_eq!(pushed.parts_resumed, 0, "{pushed:?}");
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_same_archive(&rec.path, &copy);
    assert!(
        keys(&store).contains(&foreign.to_string()),
        "the foreign object stays"
    );
}

#[test]
fn prune_without_a_head_is_an_error_and_deletes_nothing() {
    let store = Arc::new(InMemory::new());
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let orphan = StorePath::from("games/match.rwd/g-00000000000000aa/part");
    rt.block_on(store.put(&orphan, PutPayload::from_static(b"x")))
        .expect("put");
    let err = memory_remote(store.clone()).prune(NOW).expect_err("no head");
    assert!(matches!(err, RemoteError::NoArchive { .. }), "{err}");
    assert_eq!(keys(&store), vec![orphan.to_string()]);
}
