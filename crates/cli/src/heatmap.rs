//! The page-churn heatmap: iterations left to right, pages top to bottom, each cell
//! coloured by how many bytes changed there (log scale), binned to a bounded image.
//!
//! Bytes changed are counted exactly against the previous record of the timeline: from
//! the delta's runs when the page is stored as a delta against that previous page (no
//! decoding), otherwise by decoding both pages and comparing them.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use rewind_archive::Archive;
use rewind_store::{codec, ObjectRef, PageHash};

/// Binned churn: `cells[row * cols + col]` = bytes changed in that bin.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Columns (iteration bins).
    pub cols: usize,
    /// Rows (page bins).
    pub rows: usize,
    /// Bytes changed per bin, row-major.
    pub cells: Vec<u64>,
    /// First and last iteration.
    pub iterations: (u64, u64),
    /// Records per column.
    pub records_per_col: f64,
    /// Pages (largest memory on the timeline).
    pub pages: u64,
    /// Pages per row.
    pub pages_per_row: f64,
    /// Total bytes changed.
    pub total: u64,
}

/// Count bytes changed per record and page over the timeline and bin them into at most
/// `max_cols × max_rows` cells. `progress` gets `(records done, records)`.
pub fn compute(
    archive: &Archive,
    iterations: std::ops::RangeInclusive<u64>,
    max_cols: usize,
    max_rows: usize,
    progress: crate::Progress<'_>,
) -> Result<Grid> {
    let all = archive.timeline().context("cannot read the timeline")?;
    // Records before the range are walked (their changes build the page state the first
    // drawn record is compared with) but not drawn.
    let upto: Vec<_> = all
        .into_iter()
        .take_while(|r| r.iteration <= *iterations.end())
        .collect();
    let skip = upto
        .iter()
        .take_while(|r| r.iteration < *iterations.start())
        .count();
    if skip == upto.len() {
        anyhow::bail!(
            "no iterations of the timeline in {}..={}",
            iterations.start(),
            iterations.end()
        );
    }
    let tl = &upto[skip..];
    let ps = archive.page_size().bytes();
    // Every memory length is checked before anything is sized by it: the index entry
    // is read as stored, and a damaged or hostile one must be an error, not an
    // allocation of its size.
    for r in &upto {
        pages_of(r.memory_len, ps)
            .with_context(|| format!("record {} of iteration {}", r.id.0, r.iteration))?;
    }
    let pages = tl
        .iter()
        .map(|r| r.memory_len / ps as u64)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = tl.len().max(1);
    let cols = n.min(max_cols.max(1));
    let rows = (pages as usize).min(max_rows.max(1));
    let mut cells = vec![0u64; cols * rows];
    let mut cur: Vec<PageHash> = Vec::new();
    let (mut a, mut b) = (vec![0u8; ps], vec![0u8; ps]);
    let mut total = 0u64;
    for r in &upto[..skip] {
        let npages = pages_of(r.memory_len, ps)?;
        cur.resize(npages, PageHash::ZERO);
        for (i, new) in archive.changes(r.id)? {
            if let Some(slot) = cur.get_mut(i as usize) {
                *slot = new;
            }
        }
    }
    // Bytes of a page against the zero page, cached: roots and growth compare with zeros.
    let mut nonzero: HashMap<PageHash, u64> = HashMap::new();
    for (k, r) in tl.iter().enumerate() {
        let changes = archive.changes(r.id)?;
        let col = k * cols / n;
        let npages = pages_of(r.memory_len, ps)?;
        if cur.len() < npages {
            cur.resize(npages, PageHash::ZERO);
        }
        for (i, new) in changes {
            let Some(old) = cur.get_mut(i as usize) else {
                continue;
            };
            let bytes = if old.is_zero() {
                match nonzero.get(&new) {
                    Some(v) => *v,
                    None => {
                        archive.read_page(new, &mut b)?;
                        let v = b.iter().filter(|x| **x != 0).count() as u64;
                        nonzero.insert(new, v);
                        v
                    }
                }
            } else {
                changed_bytes(archive, *old, new, &mut a, &mut b)?
            };
            *old = new;
            let row = (i as u64 * rows as u64 / pages) as usize;
            if let Some(c) = cells.get_mut(row * cols + col) {
                *c += bytes;
            }
            total += bytes;
        }
        cur.truncate(npages);
        if k % 64 == 0 {
            progress(k as u64, tl.len() as u64);
        }
    }
    progress(tl.len() as u64, tl.len() as u64);
    Ok(Grid {
        cols,
        rows,
        cells,
        iterations: (
            tl.first().map_or(0, |r| r.iteration),
            tl.last().map_or(0, |r| r.iteration),
        ),
        records_per_col: n as f64 / cols as f64,
        pages,
        pages_per_row: pages as f64 / rows as f64,
        total,
    })
}

/// Pages of a memory of `memory_len` bytes: an error unless it is a whole number of
/// pages of at most 4 GiB (the wasm32 limit the archive format keeps).
pub fn pages_of(memory_len: u64, page_size: usize) -> Result<usize> {
    let ps = page_size as u64;
    if memory_len > rewind_archive::format::MAX_MEMORY || ps == 0 || !memory_len.is_multiple_of(ps) {
        anyhow::bail!(
            "memory length {memory_len} is not a whole number of {page_size}-byte pages of at most 4 GiB (a damaged archive)"
        );
    }
    usize::try_from(memory_len / ps).context("memory length does not fit in this machine's address space")
}

fn changed_bytes(archive: &Archive, old: PageHash, new: PageHash, a: &mut [u8], b: &mut [u8]) -> Result<u64> {
    if let Some(ObjectRef::Delta { parent, runs }) = archive.object(new)? {
        if parent == old {
            let mut sum = 0u64;
            for run in codec::delta_runs(runs, a.len()) {
                let (_, len) =
                    run.with_context(|| format!("delta of page {} does not decode", new.to_hex()))?;
                sum += len as u64;
            }
            return Ok(sum);
        }
    }
    archive.read_page(old, a)?;
    archive.read_page(new, b)?;
    Ok(codec::ChangedRuns::new(a, b).map(|(s, e)| (e - s) as u64).sum())
}

// ---- rendering -----------------------------------------------------------------------

const BG: [u8; 3] = [250, 250, 250];
const EMPTY: [u8; 3] = [14, 14, 18];
const INK: [u8; 3] = [30, 30, 30];

/// A black-body-like colour map (dark purple → red → orange → pale yellow) at `t` in 0..=1.
fn colour(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 6] = [
        [80.0, 30.0, 140.0],
        [120.0, 28.0, 120.0],
        [159.0, 42.0, 99.0],
        [212.0, 72.0, 66.0],
        [245.0, 125.0, 21.0],
        [252.0, 255.0, 164.0],
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (x, y) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| (x[c] + (y[c] - x[c]) * f).round() as u8)
}

/// A 3×5 pixel font: enough for numbers and the axis words.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'a' => [0, 7, 1, 7, 7],
        'b' => [4, 4, 7, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        'd' => [1, 1, 7, 5, 7],
        'e' => [7, 5, 7, 4, 7],
        'g' => [7, 5, 7, 1, 6],
        'h' => [4, 4, 7, 5, 5],
        'i' => [2, 0, 2, 2, 2],
        'k' => [4, 5, 6, 5, 5],
        'l' => [2, 2, 2, 2, 2],
        'm' => [0, 7, 7, 5, 5],
        'n' => [0, 6, 5, 5, 5],
        'o' => [0, 7, 5, 5, 7],
        'p' => [7, 5, 7, 4, 4],
        'r' => [0, 7, 4, 4, 4],
        's' => [3, 4, 2, 1, 6],
        't' => [2, 7, 2, 2, 3],
        'x' => [0, 5, 2, 5, 5],
        'y' => [5, 5, 7, 1, 7],
        'B' => [6, 5, 6, 5, 6],
        'A' => [2, 5, 7, 5, 5],
        'E' => [7, 4, 6, 4, 7],
        'N' => [5, 7, 7, 7, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [6, 5, 6, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'Y' => [5, 5, 2, 2, 2],
        'K' => [5, 5, 6, 5, 5],
        'M' => [5, 7, 7, 5, 5],
        'G' => [7, 4, 5, 5, 7],
        'I' => [7, 2, 2, 2, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '>' => [4, 2, 1, 2, 4],
        _ => [0; 5],
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&BG);
        }
        Canvas { w, h, px }
    }
    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            if let Some(p) = self.px.get_mut(i..i + 3) {
                p.copy_from_slice(&c);
            }
        }
    }
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }
    /// Text at scale `s` (each font pixel is s×s); returns the width drawn.
    fn text(&mut self, x: usize, y: usize, s: usize, t: &str) -> usize {
        for (k, ch) in t.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(x + (k * 4 + col) * s, y + row * s, s, s, INK);
                    }
                }
            }
        }
        text_width(s, t)
    }
    /// Text rotated 90° counter-clockwise, its baseline along x = `x`, starting at `y`
    /// (bottom) going up.
    fn text_up(&mut self, x: usize, y: usize, s: usize, t: &str) {
        for (k, ch) in t.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let yy = y.saturating_sub((k * 4 + col) * s + s);
                        self.rect(x + row * s, yy, s, s, INK);
                    }
                }
            }
        }
    }
}

fn text_width(s: usize, t: &str) -> usize {
    (t.chars().count() * 4).saturating_sub(1) * s
}

/// Short human size: `512`, `4K`, `1.5M`.
fn short(v: u64) -> String {
    match v {
        0..1024 => v.to_string(),
        1024..1_048_576 => format!("{:.0}K", v as f64 / 1024.0),
        _ => format!("{:.1}M", v as f64 / 1_048_576.0),
    }
}

/// Render the grid as an RGB PNG with axes, tick labels and a colour legend. Each bin is
/// drawn as a block of pixels so that small histories stay visible (the plot is at least
/// about 600×400 pixels).
pub fn render(grid: &Grid, out: &mut dyn Write) -> Result<(u32, u32)> {
    let sx = 600usize.div_ceil(grid.cols.max(1)).clamp(1, 32);
    let sy = 400usize.div_ceil(grid.rows.max(1)).clamp(1, 32);
    let (pw, ph) = (grid.cols * sx, grid.rows * sy);
    let s = 2; // font scale
    let (left, top, right, bottom) = (80, 30, 150, 60);
    let (w, h) = (left + pw + right, top + ph + bottom);
    let mut c = Canvas::new(w, h);
    let max = grid.cells.iter().copied().max().unwrap_or(0);
    let lmax = ((max.max(1)) as f64).ln_1p();
    for row in 0..grid.rows {
        for col in 0..grid.cols {
            let v = grid.cells.get(row * grid.cols + col).copied().unwrap_or(0);
            let colr = if v == 0 {
                EMPTY
            } else {
                colour((v as f64).ln_1p() / lmax)
            };
            c.rect(left + col * sx, top + row * sy, sx, sy, colr);
        }
    }
    // Frame.
    for x in left - 1..left + pw + 1 {
        c.set(x, top - 1, INK);
        c.set(x, top + ph, INK);
    }
    for y in top - 1..top + ph + 1 {
        c.set(left - 1, y, INK);
        c.set(left + pw, y, INK);
    }
    // X ticks: iterations.
    let (i0, i1) = grid.iterations;
    let ticks = 5usize;
    for t in 0..=ticks {
        let x = left + (pw.saturating_sub(1)) * t / ticks;
        let it = i0 + ((i1 - i0) as f64 * t as f64 / ticks as f64).round() as u64;
        c.rect(x, top + ph + 1, 1, 6, INK);
        let label = it.to_string();
        let lw = text_width(s, &label);
        c.text(x.saturating_sub(lw / 2), top + ph + 10, s, &label);
    }
    let title = "ITERATION ->";
    c.text(left + pw / 2 - text_width(s, title) / 2, top + ph + 34, s, title);
    // Y ticks: pages (0 at the top).
    for t in 0..=4usize {
        let y = top + (ph.saturating_sub(1)) * t / 4;
        let pg = (grid.pages.saturating_sub(1) as f64 * t as f64 / 4.0).round() as u64;
        c.rect(left - 7, y, 6, 1, INK);
        let label = pg.to_string();
        let lw = text_width(s, &label);
        c.text((left - 10).saturating_sub(lw), y.saturating_sub(5), s, &label);
    }
    c.text_up(6, top + ph / 2 + text_width(s, "PAGE") / 2, s, "PAGE");
    // Legend: bytes changed per bin, log scale.
    let (lx, ly, lh) = (left + pw + 30, top + 20, ph.clamp(60, 300).min(ph.max(60)));
    c.text(lx - 10, top, s, "BYTES");
    for y in 0..lh {
        let t = 1.0 - y as f64 / (lh.max(2) - 1) as f64;
        c.rect(lx, ly + y, 16, 1, colour(t));
    }
    c.text(lx + 22, ly, s, &short(max));
    c.text(lx + 22, ly + lh - 10, s, "1");
    c.rect(lx, ly + lh + 8, 16, 10, EMPTY);
    c.text(lx + 22, ly + lh + 8, s, "0");
    let (w32, h32) = (
        u32::try_from(w).context("image too wide")?,
        u32::try_from(h).context("image too tall")?,
    );
    let mut enc = png::Encoder::new(out, w32, h32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().context("cannot write the PNG header")?;
    wr.write_image_data(&c.px).context("cannot write the PNG image")?;
    wr.finish().context("cannot finish the PNG")?;
    Ok((w32, h32))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_memory_lengths_are_errors_not_allocations() {
        assert_eq!(super::pages_of(0, 1024).expect("empty memory"), 0);
        assert_eq!(super::pages_of(1 << 32, 1024).expect("4 GiB"), 1 << 22);
        // Lengths like the one that made the heatmap abort with "memory allocation of
        // 36028797018964992 bytes failed", and lengths that are not whole pages.
        for bad in [1u64 << 53, u64::MAX - 1023, (1 << 32) + 1024, 1000] {
            let e = super::pages_of(bad, 1024).expect_err("refused");
            assert!(e.to_string().contains("memory length"), "{e}");
        }
    }
}
