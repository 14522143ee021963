//! The two-player example (`examples/p2p.rs`), briefly: two peer processes
//! (this test binary started twice) over GGRS's UDP socket through the
//! example's relay with latency, jitter and loss; both must confirm the same
//! state hash at every frame.

#[allow(dead_code)]
#[path = "../../examples/p2p.rs"]
mod example;

use std::process::Command;

const PEER_ENV: &str = "REWIND_GGRS_P2P_PEER";

#[test]
fn p2p_two_processes_through_a_lossy_relay_agree_at_every_confirmed_frame() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let params = example::Params {
        frames: 300,
        latency_ms: 50,
        jitter_ms: 100,
        loss: 0.05,
        input_delay: 2,
        seed: 7,
    };
    let outcome = example::coordinate(&params, |peer| {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "p2p::p2p_peer_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENV, peer.to_words().join(" "));
        cmd
    })
    .unwrap_or_else(|e| panic!("the two peers must agree: {e}"));
    assert_eq!(outcome.frames_compared, 301);
    for line in &outcome.lines {
        eprintln!("{line}");
    }
}

/// A peer of the test above, in a child process it starts (with
/// `REWIND_GGRS_P2P_PEER` set). Run by hand it has no peer to play with
/// and returns.
#[test]
#[ignore = "a peer process of p2p_two_processes_through_a_lossy_relay_agree_at_every_confirmed_frame"]
fn p2p_peer_process() {
    let Some(words) = std::env::var_os(PEER_ENV) else {
        eprintln!("started without {PEER_ENV}: no peer to play with");
        return;
    };
    let words: Vec<String> = words
        .to_string_lossy()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let args = example::PeerArgs::from_words(&words).expect("peer arguments from the test");
    example::peer(&args).unwrap_or_else(|e| panic!("peer {}: {e}", args.handle));
}
