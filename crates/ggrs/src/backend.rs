//! The backend: GGRS requests fulfilled by a rewind session.

use std::time::{Duration, Instant};

use ggrs::{Config, Frame, GameStateCell, GgrsRequest, InputStatus};
use rewind::{RecordId, StateHash};
use rewind_wasmer::{RollbackReport, Session, SessionError, StepReport};
use thiserror::Error;

/// What a [`GameStateCell`] holds for one saved frame: where the state lives
/// in rewind's history, not the state itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedFrame {
    /// The GGRS frame.
    pub frame: Frame,
    /// The rewind iteration holding its state (`origin + frame`).
    pub iteration: u64,
    /// Its record in the history when it was saved.
    pub record: RecordId,
    /// Its state hash (the checksum GGRS compares is this hash as a `u128`).
    pub state_hash: StateHash,
}

/// A guest the backend can drive: a [`Session`] plus how one frame runs on it
/// and how a rollback is done. Implemented for [`Session`] itself (the
/// guest's step export); a wrapper that keeps host state beside the guest
/// (a clock, files, a world built by the host) implements it to step and roll
/// that state back too.
pub trait Simulation {
    /// The error of a frame or a rollback.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The session whose history holds the frames.
    fn session(&self) -> &Session;

    /// Runs one frame with `input` (every player's input, encoded) and
    /// records it as the next iteration.
    fn step(&mut self, input: &[u8]) -> Result<StepReport, Self::Error>;

    /// Restores `iteration` and makes it the head; returns its state hash.
    fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, Self::Error>;
}

impl Simulation for Session {
    type Error = SessionError;

    fn session(&self) -> &Session {
        self
    }

    fn step(&mut self, input: &[u8]) -> Result<StepReport, SessionError> {
        Session::step(self, input)
    }

    fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, SessionError> {
        Session::rollback_to(self, iteration).map(|r: RollbackReport| r.state_hash)
    }
}

impl<S: Simulation + ?Sized> Simulation for Box<S> {
    type Error = S::Error;

    fn session(&self) -> &Session {
        (**self).session()
    }

    fn step(&mut self, input: &[u8]) -> Result<StepReport, Self::Error> {
        (**self).step(input)
    }

    fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, Self::Error> {
        (**self).rollback_to(iteration)
    }
}

/// How a player's input becomes bytes for the guest. The backend writes
/// every player's input in handle order, back to back, and passes the result
/// to [`Simulation::step`] (so with the `step(i64)` ABI the inputs of all
/// players must fit in 8 bytes: two `u32`, eight `u8`).
pub trait InputBytes {
    /// Appends this input's bytes (little-endian for numbers) to `out`.
    fn write_bytes(&self, out: &mut Vec<u8>);
}

macro_rules! input_bytes_int {
    ($($t:ty),*) => {$(
        impl InputBytes for $t {
            fn write_bytes(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
input_bytes_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl InputBytes for bool {
    fn write_bytes(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<const N: usize> InputBytes for [u8; N] {
    fn write_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// Errors of the backend. Each leaves the session as it was before the
/// request that failed (a failed frame is undone by the session).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackendError {
    /// GGRS asked to save a frame that is not the live one.
    #[error(
        "GGRS asked to save frame {frame} (iteration {iteration}) but the live state is iteration {head}"
    )]
    SaveNotAtHead {
        /// The frame GGRS asked for.
        frame: Frame,
        /// Its iteration.
        iteration: u64,
        /// The session's head iteration.
        head: u64,
    },
    /// A frame number below zero, or one whose iteration does not fit.
    #[error("frame {frame} has no iteration (origin {origin})")]
    BadFrame {
        /// The frame.
        frame: Frame,
        /// The iteration of frame 0.
        origin: u64,
    },
    /// GGRS asked to load a cell that holds no state: the frame was never saved.
    #[error("GGRS asked to load frame {frame}, which was never saved")]
    NeverSaved {
        /// The frame.
        frame: Frame,
    },
    /// The cell GGRS handed over holds another frame than the one asked for.
    #[error("GGRS asked to load frame {frame} but its cell holds frame {held}")]
    WrongCell {
        /// The frame asked for.
        frame: Frame,
        /// The frame in the cell.
        held: Frame,
    },
    /// The frame's iteration is no longer retained by the history (its
    /// retention policy dropped it): keep at least GGRS's prediction window.
    #[error("frame {frame} (iteration {iteration}) is no longer retained")]
    NotRetained {
        /// The frame.
        frame: Frame,
        /// Its iteration.
        iteration: u64,
        /// The history's error.
        #[source]
        source: SessionError,
    },
    /// The timeline's state at the frame is not the state saved in the cell
    /// (the cell is from a branch that was superseded): nothing was restored.
    #[error("frame {frame} (iteration {iteration}) holds state {found}, not the saved {saved}")]
    StaleCell {
        /// The frame.
        frame: Frame,
        /// Its iteration.
        iteration: u64,
        /// The hash in the cell.
        saved: StateHash,
        /// The hash on the timeline.
        found: StateHash,
    },
    /// The session failed to step or roll back.
    #[error("{what} failed at frame {frame}")]
    Simulation {
        /// What was being done.
        what: &'static str,
        /// The frame.
        frame: Frame,
        /// The session's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading the session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Reading the history failed.
    #[error(transparent)]
    History(#[from] rewind::Error),
}

/// What one request did.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Handled {
    /// A save: the cell now points at this frame's record.
    Saved(SavedFrame),
    /// A load: the frame's state is live again.
    Loaded {
        /// The frame restored.
        frame: Frame,
        /// Its iteration.
        iteration: u64,
        /// How many frames back from the frame the session was at.
        depth: u64,
        /// Time to restore.
        time: Duration,
    },
    /// An advance: one frame stepped and captured.
    Advanced {
        /// The session's report (iteration, state hash, run and capture time).
        report: StepReport,
        /// True when this frame had been simulated before (a re-simulation
        /// after a load).
        resimulated: bool,
    },
}

/// Counters of a backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackendStats {
    /// Save requests.
    pub saves: u64,
    /// Load requests (rollbacks).
    pub loads: u64,
    /// Advance requests (frames stepped).
    pub advances: u64,
    /// Of which re-simulations of frames simulated before.
    pub resimulated: u64,
    /// Deepest rollback, in frames.
    pub max_depth: u64,
    /// Total time in saves.
    pub save_time: Duration,
    /// Total time in loads (restores).
    pub load_time: Duration,
    /// Total time in the guest during advances.
    pub run_time: Duration,
    /// Total capture time during advances.
    pub capture_time: Duration,
}

/// Fulfils GGRS requests with a rewind [`Simulation`] (a [`Session`]):
/// `SaveGameState` → the cell gets the iteration and state hash of the live
/// (already captured) frame, checksum = the state hash; `LoadGameState` →
/// rollback; `AdvanceFrame` → one step with every player's input.
///
/// GGRS frame `f` is rewind iteration `origin + f`, where `origin` is the
/// session's head when the backend is created (0 for a fresh session):
/// frame 0 is the state GGRS starts from, and every advance records the next
/// iteration.
#[derive(Debug)]
pub struct RewindBackend<S> {
    sim: S,
    origin: u64,
    /// The highest iteration simulated so far (re-simulations are at or below).
    high_water: u64,
    input: Vec<u8>,
    stats: BackendStats,
}

impl<S: Simulation> RewindBackend<S> {
    /// A backend over `sim`; its head iteration becomes GGRS frame 0.
    pub fn new(sim: S) -> Self {
        let origin = sim.session().head_iteration();
        Self {
            sim,
            origin,
            high_water: origin,
            input: Vec::new(),
            stats: BackendStats::default(),
        }
    }

    /// The iteration of frame 0.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The iteration holding `frame`'s state.
    pub fn iteration_of(&self, frame: Frame) -> Result<u64, BackendError> {
        u64::try_from(frame)
            .ok()
            .and_then(|f| self.origin.checked_add(f))
            .ok_or(BackendError::BadFrame {
                frame,
                origin: self.origin,
            })
    }

    /// The frame of `iteration` (`None` before the origin or past `i32::MAX`).
    pub fn frame_of(&self, iteration: u64) -> Option<Frame> {
        iteration
            .checked_sub(self.origin)
            .and_then(|f| Frame::try_from(f).ok())
    }

    /// The frame of the live state.
    pub fn current_frame(&self) -> Option<Frame> {
        self.frame_of(self.sim.session().head_iteration())
    }

    /// The checksum of `frame` on the current timeline (its state hash as a
    /// `u128`), as GGRS compares it.
    pub fn checksum(&self, frame: Frame) -> Result<u128, BackendError> {
        let iteration = self.iteration_of(frame)?;
        Ok(self.sim.session().state_hash(iteration)?.to_u128())
    }

    /// The session.
    pub fn session(&self) -> &Session {
        self.sim.session()
    }

    /// The simulation.
    pub fn simulation(&self) -> &S {
        &self.sim
    }

    /// The simulation, mutably (changes made here belong to the next frame).
    pub fn simulation_mut(&mut self) -> &mut S {
        &mut self.sim
    }

    /// The simulation back.
    pub fn into_inner(self) -> S {
        self.sim
    }

    /// Counters.
    pub fn stats(&self) -> BackendStats {
        self.stats
    }

    /// Fulfils `requests` in order (as GGRS requires). Stops at the first
    /// error; the requests before it are done.
    pub fn handle_requests<T>(&mut self, requests: Vec<GgrsRequest<T>>) -> Result<(), BackendError>
    where
        T: Config<State = SavedFrame>,
        T::Input: InputBytes,
    {
        for request in requests {
            self.handle(request)?;
        }
        Ok(())
    }

    /// Fulfils one request.
    pub fn handle<T>(&mut self, request: GgrsRequest<T>) -> Result<Handled, BackendError>
    where
        T: Config<State = SavedFrame>,
        T::Input: InputBytes,
    {
        match request {
            GgrsRequest::SaveGameState { cell, frame } => self.save(&cell, frame).map(Handled::Saved),
            GgrsRequest::LoadGameState { cell, frame } => self.load(&cell, frame),
            GgrsRequest::AdvanceFrame { inputs } => self.advance(&inputs),
        }
    }

    /// `SaveGameState`: the live state is already captured (every advance
    /// records its iteration), so a save only points the cell at it.
    pub fn save(
        &mut self,
        cell: &GameStateCell<SavedFrame>,
        frame: Frame,
    ) -> Result<SavedFrame, BackendError> {
        let t0 = Instant::now();
        let iteration = self.iteration_of(frame)?;
        let session = self.sim.session();
        let head = session.head_iteration();
        if head != iteration {
            return Err(BackendError::SaveNotAtHead {
                frame,
                iteration,
                head,
            });
        }
        let record = session
            .recorder()
            .history()
            .at(iteration)
            .map(|r| r.id())
            .map_err(rewind::Error::from)?;
        // The session's hash: it covers the host state when the session was asked to.
        let state_hash = session.state_hash(iteration)?;
        let saved = SavedFrame {
            frame,
            iteration,
            record,
            state_hash,
        };
        cell.save(frame, Some(saved), Some(state_hash.to_u128()));
        self.stats.saves += 1;
        self.stats.save_time += t0.elapsed();
        Ok(saved)
    }

    /// `LoadGameState`: rolls the session back to the cell's iteration, after
    /// checking that the cell holds that frame and that the timeline still
    /// holds the saved state there (nothing is restored otherwise).
    pub fn load(&mut self, cell: &GameStateCell<SavedFrame>, frame: Frame) -> Result<Handled, BackendError> {
        let t0 = Instant::now();
        let saved = cell
            .data()
            .map(|d| *d)
            .ok_or(BackendError::NeverSaved { frame })?;
        if saved.frame != frame {
            return Err(BackendError::WrongCell {
                frame,
                held: saved.frame,
            });
        }
        let iteration = self.iteration_of(frame)?;
        let session = self.sim.session();
        let head = session.head_iteration();
        let found = session
            .state_hash(iteration)
            .map_err(|source| BackendError::NotRetained {
                frame,
                iteration,
                source,
            })?;
        if found != saved.state_hash {
            return Err(BackendError::StaleCell {
                frame,
                iteration,
                saved: saved.state_hash,
                found,
            });
        }
        let restored = self
            .sim
            .rollback_to(iteration)
            .map_err(|e| BackendError::Simulation {
                what: "rollback",
                frame,
                source: Box::new(e),
            })?;
        if restored != saved.state_hash {
            return Err(BackendError::StaleCell {
                frame,
                iteration,
                saved: saved.state_hash,
                found: restored,
            });
        }
        let time = t0.elapsed();
        let depth = head.saturating_sub(iteration);
        self.stats.loads += 1;
        self.stats.load_time += time;
        self.stats.max_depth = self.stats.max_depth.max(depth);
        Ok(Handled::Loaded {
            frame,
            iteration,
            depth,
            time,
        })
    }

    /// `AdvanceFrame`: one step with every player's input, in handle order.
    pub fn advance<I: InputBytes>(&mut self, inputs: &[(I, InputStatus)]) -> Result<Handled, BackendError> {
        self.input.clear();
        for (input, _status) in inputs {
            input.write_bytes(&mut self.input);
        }
        let head = self.sim.session().head_iteration();
        let report = self.sim.step(&self.input).map_err(|e| BackendError::Simulation {
            what: "step",
            frame: self.frame_of(head + 1).unwrap_or(Frame::MAX),
            source: Box::new(e),
        })?;
        let resimulated = report.iteration <= self.high_water;
        self.high_water = self.high_water.max(report.iteration);
        self.stats.advances += 1;
        self.stats.resimulated += u64::from(resimulated);
        self.stats.run_time += report.run_time;
        self.stats.capture_time += report.capture_time;
        Ok(Handled::Advanced { report, resimulated })
    }
}
