//! Doom's framebuffer, read from history: time travel without a restore.

use std::path::Path;

use crate::{Error, GuestKind, GuestRun};

/// One of Doom's frames as 8-bit RGB, `width × height` pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoomFrame {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height × 3` bytes, row by row.
    pub rgb: Vec<u8>,
}

impl DoomFrame {
    /// Distinct colours in the frame (a blank frame has one).
    pub fn colours(&self) -> usize {
        let mut c: Vec<[u8; 3]> = self.rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    }

    /// Writes the frame as a PNG.
    pub fn write_png(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let encoding = |e: png::EncodingError| io(std::io::Error::other(format!("encoding the PNG: {e}")));
        let file = std::fs::File::create(path).map_err(io)?;
        let (w, h) = (u32::try_from(self.width), u32::try_from(self.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(io(std::io::Error::other("frame too large for a PNG")));
        };
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(encoding)?;
        writer.write_image_data(&self.rgb).map_err(encoding)?;
        writer.finish().map_err(encoding)
    }
}

impl GuestRun {
    /// Doom's framebuffer as it was at `iteration`, read from history without
    /// restoring anything (the live guest is only asked where its framebuffer
    /// is and how large, which does not change once the game runs).
    pub fn doom_frame(&mut self, iteration: u64) -> Result<DoomFrame, Error> {
        if self.kind() != Some(GuestKind::Doom) {
            return Err(Error::Export {
                guest: self.name().to_owned(),
                name: "screen_ptr".into(),
                reason: "only Doom has a framebuffer".into(),
            });
        }
        let ptr = self.call_i32("screen_ptr")? as u32;
        let dims = (self.call_i32("screen_width")?, self.call_i32("screen_height")?);
        let (Ok(width), Ok(height)) = (usize::try_from(dims.0), usize::try_from(dims.1)) else {
            return Err(Error::BadReturn {
                guest: GuestKind::Doom.to_string(),
                call: "screen_width/screen_height".into(),
                detail: format!("{dims:?}"),
            });
        };
        // The framebuffer is 32-bit BGRX.
        let mut bgrx = vec![0u8; width * height * 4];
        self.read(iteration, u64::from(ptr), &mut bgrx)?;
        let rgb = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
        Ok(DoomFrame { width, height, rgb })
    }
}
