//! Shared test fixtures.

use ggrs::{PredictRepeatLast, SessionBuilder, SyncTestSession};
use rewind_ggrs::SavedFrame;
use rewind_wasmer::{Session, SessionOptions};

/// The built-in guest of `examples/guest.rs`: a Game of Life board and 1,024
/// particles (one per 4 KiB page), state in non-exported globals too; memory
/// grows from 6 MiB to 10 MiB at frame 600.
pub const GUEST_WAT: &str = include_str!("../../../../examples/guest.wat");

/// Two players, one byte each.
pub struct TwoPlayers;
impl ggrs::Config for TwoPlayers {
    type Input = u8;
    type InputPredictor = PredictRepeatLast;
    type State = SavedFrame;
    type Address = std::net::SocketAddr;
}

/// One player, 8 bytes (the real guests' `step(i64)` word).
pub struct OnePlayer;
impl ggrs::Config for OnePlayer {
    type Input = u64;
    type InputPredictor = PredictRepeatLast;
    type State = SavedFrame;
    type Address = std::net::SocketAddr;
}

/// The input of `player` at `frame`: buttons that change every few frames,
/// a pure function of the frame so re-simulation sees the same.
pub fn buttons(frame: i32, player: usize) -> u8 {
    let f = frame as u64 / 7 + player as u64 * 1_000;
    let mut z = f.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z & 0x1F) as u8
}

/// A session on the built-in guest.
pub fn guest_session(seed: u64) -> Session {
    Session::new(
        GUEST_WAT,
        SessionOptions::new(4096).expect("4 KiB pages").seed(seed),
    )
    .expect("the built-in guest instantiates")
}

/// A sync test for `C` with `check_distance` (prediction window one more).
pub fn sync_test<C: ggrs::Config>(players: usize, check_distance: usize) -> SyncTestSession<C> {
    SessionBuilder::<C>::new()
        .with_num_players(players)
        .expect("players")
        .with_max_prediction_window(check_distance + 1)
        .with_check_distance(check_distance)
        .start_synctest_session()
        .expect("sync test session")
}
