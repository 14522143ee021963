//! Hexdump formatting: the classic `address  hex bytes  |ascii|` lines.

use std::fmt::Write as _;

/// Bytes per hexdump line.
pub const WIDTH: u64 = 16;

/// One hexdump line of `bytes` (at most [`WIDTH`]) starting at `addr`; `skip` leading
/// columns are left blank (for a range that does not start on a line boundary).
pub fn line(addr: u64, skip: usize, bytes: &[u8], mark: Option<&[bool]>) -> String {
    let mut s = String::with_capacity(80);
    let _ = write!(s, "{:08x} ", addr - (addr % WIDTH));
    let mut ascii = String::with_capacity(WIDTH as usize);
    for col in 0..WIDTH as usize {
        if col == 8 {
            s.push(' ');
        }
        match col.checked_sub(skip).and_then(|i| bytes.get(i).map(|b| (i, *b))) {
            Some((i, b)) => {
                let marked = mark.and_then(|m| m.get(i)).copied().unwrap_or(false);
                let _ = write!(s, "{}{b:02x}", if marked { '*' } else { ' ' });
                ascii.push(if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                });
            }
            None => {
                s.push_str("   ");
                ascii.push(' ');
            }
        }
    }
    let _ = write!(s, "  |{ascii}|");
    s
}

/// A hexdump of `bytes` read at `addr`, one line per 16-byte aligned row.
pub fn dump(addr: u64, bytes: &[u8]) -> Vec<String> {
    rows(addr, bytes.len() as u64)
        .map(|(a, skip, r)| {
            let r = r.start as usize..r.end as usize;
            line(a, skip, bytes.get(r).unwrap_or(&[]), None)
        })
        .collect()
}

/// The rows of a hexdump of `len` bytes at `addr`: `(row address, blank leading columns,
/// range of the input bytes on the row)`.
pub fn rows(addr: u64, len: u64) -> impl Iterator<Item = (u64, usize, std::ops::Range<u64>)> {
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let a = addr + done;
        let skip = (a % WIDTH) as usize;
        let take = (WIDTH - skip as u64).min(len - done);
        let r = done..done + take;
        done += take;
        Some((a, skip, r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_rows_leave_blank_columns() {
        let lines = dump(0x13, b"Hello, hexdump world");
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000010 "), "{}", lines[0]);
        assert!(lines[0].contains(" 48 65 6c"), "{}", lines[0]);
        assert!(lines[1].starts_with("00000020 "), "{}", lines[1]);
        assert!(lines[0].ends_with("|   Hello, hexdum|"), "{}", lines[0]);
    }
}
