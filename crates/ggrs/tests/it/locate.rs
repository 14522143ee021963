//! Locating the first differing page between two live peers by Merkle
//! descent: in one process against the snapshots' own comparison, and
//! between two processes over a 127.0.0.1 TCP socket (the test binary
//! starts itself as the peer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rewind_ggrs::locate::{answer, locate, LocateError, Request, Response, FANOUT};
use rewind_wasmer::{Session, SessionOptions};

use crate::common::{guest_session, GUEST_WAT};

/// Set in the child: the peer's role.
const PEER_ENV: &str = "REWIND_GGRS_LOCATE_PEER";
/// The byte the peer changes by hand before frame 50 (page 261: a particle
/// page, away from the particle's 16 bytes, so the guest never rewrites it).
const FLIP_ADDR: u64 = 0x10_0000 + 5 * 4096 + 3000;
const FRAMES: u64 = 80;
const SEED: u64 = 41;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The run both peers make: `FRAMES` frames of the built-in guest with the
/// same inputs; with `flip`, one byte of memory is changed before frame 50.
fn run(flip: bool) -> Session {
    let mut s = guest_session(SEED);
    for f in 0..FRAMES {
        if flip && f == 49 {
            let memory = s.guest().memory().clone();
            let view = memory.view(s.store_mut());
            view.write(FLIP_ADDR, &[0xA5])
                .expect("the address is inside memory");
        }
        s.step(&[(f as u8).wrapping_mul(13)]).expect("step");
    }
    s
}

fn levels(session: &Session, iteration: u64) -> usize {
    let snapshot = session
        .recorder()
        .history()
        .at(iteration)
        .expect("retained")
        .snapshot();
    snapshot.tree().levels().len() + 1
}

#[test]
fn locate_in_process_matches_the_snapshot_comparison() {
    let (a, b) = (run(false), run(true));
    for iteration in [10, 49, 50, 79] {
        let found = locate(&a, iteration, |r| Ok::<_, LocateError>(answer(&b, r))).expect("locate");
        let sa = a.recorder().history().at(iteration).expect("a").snapshot();
        let sb = b.recorder().history().at(iteration).expect("b").snapshot();
        assert_eq!(
            found.equal,
            sa.state_hash() == sb.state_hash(),
            "iteration {iteration}"
        );
        assert_eq!(
            found.first_page,
            sa.first_differing_page(sb),
            "iteration {iteration}"
        );
        if iteration >= 50 {
            assert_eq!(found.first_page, Some((FLIP_ADDR / 4096) as u32));
        }
        assert!(
            found.hashes_received <= FANOUT * levels(&a, iteration),
            "{found:?}"
        );
    }
}

/// Input 1 grows the memory from 2 to 22 wasm pages (32 to 352 rewind
/// pages: a tree one level deeper); input 2 writes a byte in page 3.
const GROWER: &str = r#"(module
  (memory (export "memory") 2 64)
  (func (export "step") (param i64)
    (if (i64.eq (local.get 0) (i64.const 1))
      (then (drop (memory.grow (i32.const 20)))))
    (if (i64.eq (local.get 0) (i64.const 2))
      (then (i32.store8 (i32.const 0x3010) (i32.const 7))))))"#;

fn grower(inputs: &[u8]) -> Session {
    let mut s = Session::new(GROWER, SessionOptions::new(4096).expect("size").seed(SEED)).expect("guest");
    for &i in inputs {
        s.step(&[i]).expect("step");
    }
    s
}

#[test]
fn locate_across_memory_lengths_and_seeds() {
    // Equal pages where both have them, one memory longer (its tree deeper):
    // the first page past the shorter memory.
    let (short, long) = (grower(&[0, 0, 0]), grower(&[0, 1, 0]));
    for (a, b) in [(&short, &long), (&long, &short)] {
        let found = locate(a, 3, |r| Ok::<_, LocateError>(answer(b, r))).expect("locate");
        assert!(!found.equal);
        assert_eq!(found.first_page, Some(32), "{found:?}");
        assert_eq!(
            (
                found.memory_len.0.min(found.memory_len.1),
                found.memory_len.0.max(found.memory_len.1)
            ),
            (2 * 65536, 22 * 65536)
        );
    }
    // A differing page inside the common part: the same page the snapshots'
    // own comparison finds.
    let (short, long) = (grower(&[0, 2, 0]), grower(&[0, 1, 0]));
    for (a, b) in [(&short, &long), (&long, &short)] {
        let found = locate(a, 3, |r| Ok::<_, LocateError>(answer(b, r))).expect("locate");
        let sa = a.recorder().history().at(3).expect("a").snapshot();
        let sb = b.recorder().history().at(3).expect("b").snapshot();
        assert_eq!(found.first_page, Some(3), "{found:?}");
        assert_eq!(sa.first_differing_page(sb), Some(3));
        assert!(
            found.hashes_received <= FANOUT * levels(a, 3).max(levels(b, 3)),
            "{found:?}"
        );
    }
    // Only the globals or nothing differ.
    let same = locate(&short, 1, |r| Ok::<_, LocateError>(answer(&long, r))).expect("locate");
    assert!(same.equal && same.first_page.is_none(), "{same:?}");
    let mut short = guest_session(SEED);
    for _ in 0..6 {
        short.step(&[0]).expect("step");
    }

    // A peer with another seed: a clear error, not a wrong page.
    let other =
        Session::new(GUEST_WAT, SessionOptions::new(4096).expect("size").seed(SEED + 1)).expect("guest");
    let err = locate(&short, 0, |r| Ok::<_, LocateError>(answer(&other, r))).expect_err("seeds differ");
    assert!(matches!(err, LocateError::SeedMismatch), "{err}");
    // Another page size.
    let other = Session::new(GUEST_WAT, SessionOptions::new(8192).expect("size").seed(SEED)).expect("guest");
    let err = locate(&short, 0, |r| Ok::<_, LocateError>(answer(&other, r))).expect_err("page sizes differ");
    assert!(
        matches!(
            err,
            LocateError::PageSizeMismatch {
                local: 4096,
                remote: 8192
            }
        ),
        "{err}"
    );
    // An iteration the peer does not hold.
    let err = locate(&short, 5, |r| Ok::<_, LocateError>(answer(&other, r))).expect_err("not held");
    assert!(matches!(err, LocateError::Remote(_)), "{err}");
}

#[test]
fn malformed_messages_are_errors() {
    for bytes in [
        &[][..],
        &[9],
        &[1, 2, 3],
        &[2; 10],
        &[4, 255, 255, 255, 255],
        &[3, 0],
    ] {
        assert!(Request::decode(bytes).is_err() || Response::decode(bytes).is_err());
        assert!(
            matches!(Response::decode(bytes), Err(LocateError::Malformed(_))),
            "{bytes:?}"
        );
    }
    let r = Request::Nodes {
        iteration: 7,
        level: 2,
        start: 33,
        count: 16,
    };
    assert_eq!(Request::decode(&r.encode()).expect("round trip"), r);
    let mut long = r.encode();
    long.push(0);
    assert!(matches!(Request::decode(&long), Err(LocateError::Malformed(_))));
}

fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(bytes.len() as u32).to_le_bytes())?;
    stream.write_all(bytes)
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Kills the child if the test fails before it exits.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn locate_between_two_processes_over_tcp() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let child = Command::new(exe)
        .args([
            "--exact",
            "locate::locate_peer_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the peer process");
    let mut child = Reap(child);
    // The peer prints its port once its session has run its frames.
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test … ... " before it on the same line.
            if let Some((_, port)) = line.split_once("REWIND_GGRS_PEER_PORT=") {
                let _ = tx.send(port.trim().parse::<u16>());
            }
        }
    });
    let local = run(false);
    let port = rx
        .recv_timeout(TIMEOUT)
        .expect("the peer reports its port within the timeout")
        .expect("a port number");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the peer");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");

    let mut bytes_sent = 0usize;
    let mut bytes_received = 0usize;
    let mut ask = |request: &Request| -> std::io::Result<Response> {
        let out = request.encode();
        bytes_sent += out.len() + 4;
        write_frame(&mut stream, &out)?;
        let back = read_frame(&mut stream)?;
        bytes_received += back.len() + 4;
        Response::decode(&back).map_err(std::io::Error::other)
    };
    let equal = locate(&local, 40, &mut ask).expect("locate at 40");
    assert!(equal.equal, "{equal:?}");
    let found = locate(&local, 60, &mut ask).expect("locate at 60");
    assert!(!found.equal);
    assert_eq!(found.first_page, Some((FLIP_ADDR / 4096) as u32), "{found:?}");
    let bound = FANOUT * levels(&local, 60);
    assert!(
        found.hashes_received <= bound,
        "{} hashes > {bound}",
        found.hashes_received
    );
    eprintln!(
        "located page {:?} at iteration 60 in {} round trips, {} node hashes ({} bytes sent, {} received)",
        found.first_page, found.round_trips, found.hashes_received, bytes_sent, bytes_received
    );
    // An empty frame tells the peer to stop.
    write_frame(&mut stream, &[]).expect("goodbye");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.0.try_wait().expect("peer status") {
            Some(status) => {
                assert!(status.success(), "the peer failed: {status}");
                break;
            }
            None if Instant::now() > deadline => panic!("the peer did not exit in time"),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The peer of [`locate_between_two_processes_over_tcp`], run in a child
/// process it starts (with `REWIND_GGRS_LOCATE_PEER` set). Run by hand it
/// has nothing to serve and returns.
#[test]
#[ignore = "the peer process of locate_between_two_processes_over_tcp"]
fn locate_peer_process() {
    if std::env::var_os(PEER_ENV).is_none() {
        eprintln!("started without {PEER_ENV}: nothing to serve");
        return;
    }
    let session = run(true);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("address").port();
    listener.set_nonblocking(true).expect("nonblocking accept");
    println!("REWIND_GGRS_PEER_PORT={port}");
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection from the test: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking stream");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    loop {
        let frame = read_frame(&mut stream).expect("a request from the test");
        if frame.is_empty() {
            break;
        }
        let response = match Request::decode(&frame) {
            Ok(request) => answer(&session, &request),
            Err(e) => Response::Error(e.to_string()),
        };
        write_frame(&mut stream, &response.encode()).expect("answer");
    }
}
