//! Two players over GGRS's `P2PSession`, each in its own process, with rewind
//! as the state backend, through a UDP relay that adds latency, jitter and
//! packet loss.
//!
//! ```sh
//! cargo run --release -p rewind-ggrs --example p2p                  # 2,000 frames, 50-150 ms, 5 % loss
//! cargo run --release -p rewind-ggrs --example p2p -- --frames 600 --latency 80 --jitter 40 --loss 0.1
//! ```
//!
//! The coordinator (this process) runs the relay and starts two peer
//! processes (this program with `--peer`). Each peer runs the built-in guest
//! (`examples/guest.wat`) at 60 frames per second: GGRS exchanges inputs
//! through the relay, predicts the remote player's input, and asks rewind to
//! load and re-simulate when a prediction was wrong. Every frame a peer's
//! GGRS confirms, the peer reports its state hash; the coordinator checks
//! that both peers report the same hash for every confirmed frame, and
//! prints rollbacks, frames re-simulated, frame time p50/p99 and capture and
//! restore times.
//!
//! The relay: peer A sends to the relay's socket `ra`, which forwards from
//! `rb` to B; B sends to `rb`, forwarded from `ra` to A. Each packet is
//! dropped with probability `loss`, else delivered after `latency` ms plus
//! a uniform `0..jitter` ms (so packets also arrive out of order).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ggrs::{
    DesyncDetection, GgrsError, GgrsEvent, P2PSession, PlayerType, PredictRepeatLast, SessionBuilder,
    SessionState, UdpNonBlockingSocket,
};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;
use rewind::Policy;
use rewind_ggrs::{Handled, RewindBackend, SavedFrame};
use rewind_wasmer::{Session, SessionOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const GUEST: &str = include_str!("../../../examples/guest.wat");
const FPS: u64 = 60;
const SEED: u64 = 0x5EED;
/// Marks a peer's report lines on its stdout.
const MARK: &str = "@peer ";

/// GGRS configuration: one byte of buttons per player.
pub struct Game;
impl ggrs::Config for Game {
    type Input = u8;
    type InputPredictor = PredictRepeatLast;
    type State = SavedFrame;
    type Address = SocketAddr;
}

/// The run's parameters.
#[derive(Clone, Debug)]
pub struct Params {
    /// Frames every peer must confirm.
    pub frames: u32,
    /// One-way delay added by the relay, in ms.
    pub latency_ms: u64,
    /// Extra uniform delay `0..jitter`, in ms.
    pub jitter_ms: u64,
    /// Probability that the relay drops a packet.
    pub loss: f64,
    /// Input delay in frames.
    pub input_delay: usize,
    /// Seed of the relay's randomness.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            frames: 2_000,
            latency_ms: 50,
            jitter_ms: 100,
            loss: 0.05,
            input_delay: 2,
            seed: 1,
        }
    }
}

/// What one peer is told.
#[derive(Clone, Debug)]
pub struct PeerArgs {
    /// 0 or 1.
    pub handle: usize,
    /// The UDP port it binds.
    pub port: u16,
    /// The relay address it sends to.
    pub remote: SocketAddr,
    /// Frames to confirm.
    pub frames: u32,
    /// Input delay.
    pub input_delay: usize,
}

impl PeerArgs {
    /// As command-line words.
    pub fn to_words(&self) -> Vec<String> {
        vec![
            self.handle.to_string(),
            self.port.to_string(),
            self.remote.to_string(),
            self.frames.to_string(),
            self.input_delay.to_string(),
        ]
    }

    /// From command-line words.
    pub fn from_words(words: &[String]) -> Result<Self, BoxError> {
        let [handle, port, remote, frames, delay] = words else {
            return Err(
                format!("peer arguments: handle port remote frames input_delay, got {words:?}").into(),
            );
        };
        Ok(Self {
            handle: handle.parse()?,
            port: port.parse()?,
            remote: remote.parse()?,
            frames: frames.parse()?,
            input_delay: delay.parse()?,
        })
    }
}

/// A player's buttons at `frame`: held for a while, then changed, so that
/// GGRS's "repeat the last input" prediction is right most of the time and
/// wrong at every change.
pub fn buttons(frame: i32, player: usize) -> u8 {
    let mut r = SplitMix64::seed_from_u64(frame as u64 / 9 * 2 + player as u64);
    (r.next_u64() & 0x1F) as u8
}

/// What a peer reports at the end.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    /// (frame, state hash) of every confirmed frame, in order.
    pub confirmed: Vec<(i32, String)>,
    /// Summary lines to print.
    pub lines: Vec<String>,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Runs one peer; prints `@peer confirmed <frame> <hash>` per confirmed
/// frame and `@peer stat <line>` summary lines on stdout.
pub fn peer(args: &PeerArgs) -> Result<(), BoxError> {
    let options = SessionOptions::new(4096)?
        .seed(SEED)
        .policy(Policy::default().keep_last(256));
    let mut backend = RewindBackend::new(Session::new(GUEST, options)?);
    let socket = UdpNonBlockingSocket::bind_to_port(args.port)?;
    let other = 1 - args.handle;
    let mut session = SessionBuilder::<Game>::new()
        .with_num_players(2)?
        .with_input_delay(args.input_delay)
        .with_max_prediction_window(12)
        .with_desync_detection_mode(DesyncDetection::On { interval: 10 })
        .with_fps(FPS as usize)?
        .add_player(PlayerType::Local, args.handle)?
        .add_player(PlayerType::Remote(args.remote), other)?
        .start_p2p_session(socket)?;

    let frame_time = Duration::from_nanos(1_000_000_000 / FPS);
    let deadline = Instant::now() + Duration::from_secs(30 + u64::from(args.frames) * 4 / FPS);
    let mut next_tick = Instant::now();
    let mut logged = 0i32; // frames below this are reported
    let mut frame_times = Vec::new();
    let mut captures = Vec::new();
    let mut restores = Vec::new();
    let mut stalls = 0u64;
    let mut desyncs = 0u32;
    let started = Instant::now();
    let mut running_since = None;
    let target = args.frames as i32;
    while logged <= target {
        if Instant::now() > deadline {
            return Err(format!("peer {} timed out at frame {logged}", args.handle).into());
        }
        session.poll_remote_clients();
        desyncs += report_desyncs(&mut session, args.handle);
        if session.current_state() == SessionState::Running {
            running_since.get_or_insert_with(Instant::now);
            let frame = session.current_frame();
            session.add_local_input(args.handle, buttons(frame, args.handle))?;
            let t0 = Instant::now();
            match session.advance_frame() {
                Ok(requests) => {
                    for request in requests {
                        match backend.handle(request)? {
                            Handled::Advanced { report, .. } => captures.push(report.capture_time),
                            Handled::Loaded { time, .. } => restores.push(time),
                            _ => {}
                        }
                    }
                    frame_times.push(t0.elapsed());
                }
                Err(GgrsError::PredictionThreshold) => stalls += 1,
                Err(e) => return Err(e.into()),
            }
            // Frames up to the confirmed one are final: report their hashes.
            let confirmed = session.confirmed_frame().min(session.current_frame());
            while logged <= confirmed && logged <= target {
                let hash = backend.session().state_hash(backend.iteration_of(logged)?)?;
                println!("{MARK}confirmed {logged} {}", hash.to_hex());
                logged += 1;
            }
        }
        next_tick += frame_time;
        match next_tick.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => next_tick = Instant::now(),
        }
    }
    // Keep answering for a while so that the other peer gets our last inputs.
    let linger = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < linger {
        session.poll_remote_clients();
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = backend.stats();
    let session_stats = backend.session().stats();
    let run_secs = running_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "{MARK}stat peer {}: {} frames in {:.1} s ({:.1} s synchronizing), {} rollbacks (deepest {} frames), {} frames re-simulated, {} stalls at the prediction window, {} desyncs, {} re-instantiations",
        args.handle,
        session.current_frame(),
        run_secs,
        started.elapsed().as_secs_f64() - run_secs,
        stats.loads,
        stats.max_depth,
        stats.resimulated,
        stalls,
        desyncs,
        session_stats.reinstantiations,
    );
    println!(
        "{MARK}stat peer {}: frame time (advance_frame + requests) p50 {} p99 {}; capture p50 {} p99 {}; restore p50 {} p99 {}; save mean {}; capture mode {}",
        args.handle,
        ms(percentile(&mut frame_times, 0.5)),
        ms(percentile(&mut frame_times, 0.99)),
        ms(percentile(&mut captures, 0.5)),
        ms(percentile(&mut captures, 0.99)),
        ms(percentile(&mut restores, 0.5)),
        ms(percentile(&mut restores, 0.99)),
        ms(stats.save_time / u32::try_from(stats.saves.max(1)).unwrap_or(u32::MAX)),
        backend.session().mode(),
    );
    if desyncs > 0 {
        return Err(format!("peer {}: {desyncs} desyncs", args.handle).into());
    }
    Ok(())
}

/// A packet waiting in the relay.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    due: Reverse<Instant>,
    seq: u64,
    to_b: bool,
    bytes: Vec<u8>,
}

/// The relay's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayStats {
    /// Packets received.
    pub received: u64,
    /// Packets dropped.
    pub dropped: u64,
}

/// Runs the relay until `stop`: `ra` (where A sends) forwards to `b` from `rb`,
/// `rb` forwards to `a` from `ra`.
fn relay(
    ra: UdpSocket,
    rb: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    params: Params,
    stop: Arc<AtomicBool>,
) -> RelayStats {
    let mut rng = SplitMix64::seed_from_u64(params.seed);
    let mut queue = BinaryHeap::new();
    let mut stats = RelayStats::default();
    let mut seq = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        for (socket, to_b) in [(&ra, true), (&rb, false)] {
            while let Ok((n, _from)) = socket.recv_from(&mut buf) {
                stats.received += 1;
                if ((rng.next_u64() % 1_000_000) as f64) < params.loss * 1e6 {
                    stats.dropped += 1;
                    continue;
                }
                let delay = params.latency_ms + rng.next_u64() % params.jitter_ms.max(1);
                seq += 1;
                queue.push(Pending {
                    due: Reverse(Instant::now() + Duration::from_millis(delay)),
                    seq,
                    to_b,
                    bytes: buf[..n].to_vec(),
                });
            }
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.due.0 <= now) {
            let Some(p) = queue.pop() else { break };
            let _ = if p.to_b {
                rb.send_to(&p.bytes, b)
            } else {
                ra.send_to(&p.bytes, a)
            };
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    stats
}

/// Kills a peer process on drop if it is still running.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Two free UDP ports for the peer processes, distinct: both sockets are held until
/// both ports are chosen (released one at a time, the kernel may hand out the same
/// port twice).
fn free_udp_ports() -> Result<(u16, u16), BoxError> {
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// What the coordinator found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Confirmed frames both peers reported.
    pub frames_compared: usize,
    /// Lines to print.
    pub lines: Vec<String>,
}

/// Runs the relay and two peers (`spawn(args)` makes each peer's command),
/// then checks that both peers confirmed the same state hash at every frame.
pub fn coordinate(params: &Params, spawn: impl Fn(&PeerArgs) -> Command) -> Result<Outcome, BoxError> {
    let ra = UdpSocket::bind("127.0.0.1:0")?;
    let rb = UdpSocket::bind("127.0.0.1:0")?;
    ra.set_nonblocking(true)?;
    rb.set_nonblocking(true)?;
    let (ra_addr, rb_addr) = (ra.local_addr()?, rb.local_addr()?);
    let (pa, pb) = free_udp_ports()?;
    let a: SocketAddr = ([127, 0, 0, 1], pa).into();
    let b: SocketAddr = ([127, 0, 0, 1], pb).into();
    let stop = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let (stop, params) = (Arc::clone(&stop), params.clone());
        std::thread::spawn(move || relay(ra, rb, a, b, params, stop))
    };
    let peers = [
        PeerArgs {
            handle: 0,
            port: pa,
            remote: ra_addr,
            frames: params.frames,
            input_delay: params.input_delay,
        },
        PeerArgs {
            handle: 1,
            port: pb,
            remote: rb_addr,
            frames: params.frames,
            input_delay: params.input_delay,
        },
    ];
    let mut children = Vec::new();
    for p in &peers {
        let mut cmd = spawn(p);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        children.push(Reap(cmd.spawn()?));
    }
    // Read both peers' reports on threads (each child's stdout is a pipe).
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let out = c.0.stdout.take();
            std::thread::spawn(move || out.map(read_report).unwrap_or_default())
        })
        .collect();
    let timeout = Duration::from_secs(60 + u64::from(params.frames) * 5 / FPS);
    let failures = wait_for(&mut children, timeout);
    stop.store(true, Ordering::Relaxed);
    let relay_stats = relay_thread.join().map_err(|_| "the relay thread panicked")?;
    let reports: Vec<PeerReport> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    let [ra_report, rb_report] = reports.as_slice() else {
        return Err("missing peer reports".into());
    };
    let want = check_reports(ra_report, rb_report, params.frames)?;
    let mut lines = vec![format!(
        "relay: {} ms + 0..{} ms jitter, {:.1} % loss: {} packets, {} dropped",
        params.latency_ms,
        params.jitter_ms,
        params.loss * 100.0,
        relay_stats.received,
        relay_stats.dropped
    )];
    lines.extend(ra_report.lines.iter().chain(&rb_report.lines).cloned());
    lines.push(format!(
        "both peers: equal state hashes at all {want} confirmed frames (0..={})",
        params.frames
    ));
    Ok(Outcome {
        frames_compared: want,
        lines,
    })
}

/// Count (and print to stderr) the desyncs GGRS reported since the last poll.
fn report_desyncs(session: &mut P2PSession<Game>, handle: usize) -> u32 {
    let mut desyncs = 0;
    for event in session.events() {
        if let GgrsEvent::DesyncDetected {
            frame,
            local_checksum,
            remote_checksum,
            ..
        } = event
        {
            desyncs += 1;
            eprintln!(
                "peer {handle}: desync at frame {frame}: {local_checksum:032x} vs {remote_checksum:032x}"
            );
        }
    }
    desyncs
}

/// A peer's report from its stdout: the `@peer` lines, wherever they start (under a
/// test harness the first line may follow "test … ... ").
fn read_report(out: std::process::ChildStdout) -> PeerReport {
    let mut report = PeerReport::default();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let line = match line.find(MARK) {
            Some(at) => &line[at + MARK.len()..],
            None => continue,
        };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("confirmed") => {
                if let (Some(f), Some(h)) = (words.next().and_then(|f| f.parse().ok()), words.next()) {
                    report.confirmed.push((f, h.to_owned()));
                }
            }
            Some("stat") => report.lines.push(line["stat ".len()..].to_owned()),
            _ => {}
        }
    }
    report
}

/// Wait for every peer to exit within `timeout` (killing one that does not); the
/// failures, one line each.
fn wait_for(children: &mut [Reap], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    for (i, child) in children.iter_mut().enumerate() {
        loop {
            match child.0.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    failures.push(format!("peer {i} failed: {status}"));
                    break;
                }
                Err(e) => {
                    failures.push(format!("peer {i} could not be waited for: {e}"));
                    break;
                }
                Ok(None) if Instant::now() > deadline => {
                    failures.push(format!("peer {i} did not finish within {timeout:?}"));
                    let _ = child.0.kill();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    failures
}

/// Both peers confirmed frames `0..=frames`, with equal state hashes; returns how
/// many frames were compared.
fn check_reports(a: &PeerReport, b: &PeerReport, frames: u32) -> Result<usize, BoxError> {
    let want = frames as usize + 1;
    for (i, r) in [a, b].into_iter().enumerate() {
        if r.confirmed.len() != want || r.confirmed.iter().enumerate().any(|(k, (f, _))| *f != k as i32) {
            return Err(format!(
                "peer {i} reported {} confirmed frames, not frames 0..={frames}",
                r.confirmed.len(),
            )
            .into());
        }
    }
    if let Some(((f, x), (_, y))) = a.confirmed.iter().zip(&b.confirmed).find(|(x, y)| x.1 != y.1) {
        return Err(format!("the peers' states differ at confirmed frame {f}: {x} vs {y}").into());
    }
    Ok(want)
}

fn parse_params(args: &[String]) -> Result<Params, BoxError> {
    let mut p = Params::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--frames" => p.frames = value()?.parse()?,
            "--latency" => p.latency_ms = value()?.parse()?,
            "--jitter" => p.jitter_ms = value()?.parse()?,
            "--loss" => p.loss = value()?.parse()?,
            "--input-delay" => p.input_delay = value()?.parse()?,
            "--seed" => p.seed = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !(0.0..1.0).contains(&p.loss) {
        return Err("--loss must be in 0..1".into());
    }
    Ok(p)
}

#[allow(dead_code)] // The test binary includes this file as a module.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--peer") {
        PeerArgs::from_words(&args[1..]).and_then(|p| peer(&p))
    } else {
        parse_params(&args).and_then(|params| {
            let exe = std::env::current_exe()?;
            let outcome = coordinate(&params, |p| {
                let mut cmd = Command::new(&exe);
                cmd.arg("--peer").args(p.to_words());
                cmd
            })?;
            for line in outcome.lines {
                println!("{line}");
            }
            Ok(())
        })
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
