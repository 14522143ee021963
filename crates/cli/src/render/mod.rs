//! Rendering, in one place: sizes, hex, JSON Lines, hexdumps and the one-line error
//! chain. The commands (`crate::cmd`) print through these; nothing else formats.

pub mod hexdump;

use std::error::Error;
use std::io::Write;

use anyhow::{Context, Result};

/// A byte count for people: `512 B`, `1.5 KiB`, `27.9 MiB`.
pub fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == UNITS[0] {
        format!("{b} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Lower-case hex of bytes, no separators: what JSON carries.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex digits in pairs separated by spaces (`9c 02 00 00`): bytes for people.
pub fn spaced_hex(h: &str) -> String {
    h.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("??"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Write one JSON Lines line: `v` as compact JSON and a newline.
///
/// The line is serialized first and written with one `write_all`, so a write error
/// reaches the caller as the `std::io::Error` it is (serde_json's own error would hide
/// a closed pipe behind its message).
pub fn json_line(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<()> {
    let mut line = serde_json::to_vec(v).context("cannot encode JSON")?;
    line.push(b'\n');
    out.write_all(&line)?;
    Ok(())
}

/// An error and its sources on one line, `what: why: deeper why`, each message once
/// (some errors print their source themselves and also return it from `source()`), and
/// no line breaks.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut s = String::new();
    let mut next = Some(e);
    while let Some(c) = next {
        let t = c.to_string();
        if !(t.is_empty() || s.ends_with(&t) || s.contains(&format!("{t}: "))) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&t);
        }
        next = c.source();
    }
    s.replace('\n', " ")
}

/// True when `e` (or a cause of it) is a closed pipe: the reader (`head`) has what it
/// wanted, which is not an error.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(29_222_912), "27.9 MiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn an_error_chain_is_one_line_with_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file\nor directory");
        let e = anyhow::Error::new(io).context("cannot open a.rwd");
        assert_eq!(one_line(&*e), "cannot open a.rwd: No such file or directory");
        // A message that already ends with its cause does not repeat it.
        let inner = anyhow::anyhow!("disk full");
        let e = inner.context("write x: disk full");
        assert_eq!(one_line(&*e), "write x: disk full");
    }

    #[test]
    fn hex_is_lower_case_pairs() {
        assert_eq!(hex(&[0x9c, 0x02, 0, 0xff]), "9c0200ff");
        assert_eq!(spaced_hex("9c0200ff"), "9c 02 00 ff");
    }
}
