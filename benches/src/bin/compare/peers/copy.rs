//! The peers that keep whole copies of the memory: a full-copy ring (optionally with an
//! xxh3-128 state hash per frame) and lz4 of the whole memory.

use std::hint::black_box;

use super::{drive, rollbacks, split_first, timed, Peer, PeerRun};
use crate::args::Config;
use crate::workload::Spec;
use crate::{Res, WINDOW_600};

/// Full-copy ring (optionally with an xxh3-128 state hash per frame).
pub fn ring(spec: &Spec, cfg: &Config, hash: bool) -> Res<PeerRun> {
    let mut src = spec.source()?;
    let m = src.memory().len();
    let slots = cfg.ring_slots;
    // Pre-faulted slots (vec![0; n] would map lazily and time page faults).
    let mut ring: Vec<Vec<u8>> = (0..slots).map(|_| vec![1u8; m]).collect();
    let times = drive(src.as_mut(), spec.frames, |f, mem, _| {
        ring[f as usize % slots].copy_from_slice(mem);
        if hash {
            black_box(xxhash_rust::xxh3::xxh3_128(mem));
        }
        Ok(())
    })?;
    let head = times.len() as u64 - 1;
    let (first, capture) = split_first(times);
    let restore = rollbacks(
        src.as_mut(),
        &mut ring,
        head,
        cfg.reps,
        |ring, f, mem, _| {
            ring[f as usize % slots].copy_from_slice(mem);
            Ok(())
        },
        |ring, f, mem| {
            timed(|| {
                mem.copy_from_slice(&ring[f as usize % slots]);
                if hash {
                    black_box(xxhash_rust::xxh3::xxh3_128(mem));
                }
                Ok(())
            })
        },
    )?;
    Ok(PeerRun {
        capture,
        first_frame_ms: first,
        restore,
        window_bytes: Some((WINDOW_600 * m) as f64),
        window_note: "computed W × M",
        ..PeerRun::new(if hash { Peer::Hash } else { Peer::Ring })
    })
}

/// lz4 (lz4_flex block) of the whole memory per frame, into a ring of reused buffers.
pub fn lz4(spec: &Spec, cfg: &Config) -> Res<PeerRun> {
    let mut src = spec.source()?;
    let m = src.memory().len();
    let slots = cfg.ring_slots;
    let cap = lz4_flex::block::get_maximum_output_size(m);
    let mut ring: Vec<(Vec<u8>, usize)> = (0..slots).map(|_| (vec![1u8; cap], 0)).collect();
    let mut sizes = Vec::new();
    let times = drive(src.as_mut(), spec.frames, |f, mem, _| {
        let slot = &mut ring[f as usize % slots];
        slot.1 = lz4_flex::block::compress_into(mem, &mut slot.0)?;
        sizes.push(slot.1 as f64);
        Ok(())
    })?;
    let head = times.len() as u64 - 1;
    let (first, capture) = split_first(times);
    let restore = rollbacks(
        src.as_mut(),
        &mut ring,
        head,
        cfg.reps,
        |ring, f, mem, _| {
            let slot = &mut ring[f as usize % slots];
            slot.1 = lz4_flex::block::compress_into(mem, &mut slot.0)?;
            Ok(())
        },
        |ring, f, mem| {
            timed(|| {
                let slot = &ring[f as usize % slots];
                let n = lz4_flex::block::decompress_into(&slot.0[..slot.1], mem)?;
                if n != m {
                    return Err(
                        format!("an lz4 frame decompressed to {n} bytes, not the memory's {m}").into(),
                    );
                }
                Ok(())
            })
        },
    )?;
    let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
    Ok(PeerRun {
        capture,
        first_frame_ms: first,
        open_read: restore.clone(),
        restore,
        window_bytes: Some(mean * WINDOW_600 as f64),
        window_note: "computed W × mean frame",
        disk_per_frame: Some(mean),
        ..PeerRun::new(Peer::Lz4)
    })
}
