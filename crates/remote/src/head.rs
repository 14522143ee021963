//! The head object: the one mutable object of a remote archive, naming the parts that
//! hold its bytes.

use serde::{Deserialize, Serialize};

/// The head format this build writes and reads.
pub const HEAD_FORMAT: u32 = 1;

/// The bytes of an archive header and of a commit trailer (`docs/format.md`).
pub(crate) const HEADER_LEN: u64 = 64;
pub(crate) const TRAILER_LEN: u64 = 64;

/// The checksum of a part, of the archive header and of the last trailer: xxh3-64
/// (seed 0) as 16 lowercase hex digits.
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The head object (`<key>/head.json`): which bytes the remote archive holds.
///
/// Written last, after every part it names, with a conditional put; so a reader that
/// finds a head finds every part it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// [`HEAD_FORMAT`].
    pub format: u32,
    /// The generation: 16 hex digits naming the part prefix. A push whose local file no
    /// longer extends the remote bytes (a garbage collection rewrote it) starts a new
    /// generation.
    pub generation: String,
    /// Bytes of the archive: the end of its last commit (a trailer boundary).
    pub len: u64,
    /// The archive's hash seed (from its header).
    pub seed: u64,
    /// The archive's page size.
    pub page_size: u32,
    /// [`checksum`] of the 64-byte archive header.
    pub header_checksum: String,
    /// [`checksum`] of the last commit's 64-byte trailer.
    pub trailer_checksum: String,
    /// The head record of the last commit, when the history has one.
    pub head_record: Option<u64>,
    /// The state hash of that record (32 hex digits).
    pub head_state_hash: Option<String>,
    /// The parts, in order, covering `0..len` without gaps.
    pub parts: Vec<Part>,
}

/// One part object: an immutable byte range of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Offset of its first byte in the archive.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// [`checksum`] of its bytes.
    pub checksum: String,
}

impl Part {
    /// The part's end offset.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Its object name inside the generation's prefix: offset, length and checksum, so
    /// equal names mean equal bytes and a part is never overwritten with other bytes.
    pub fn name(&self) -> String {
        format!("{:016x}-{:016x}-{}", self.start, self.len, self.checksum)
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Head {
    /// Parse and check a head object: format, hex fields, parts contiguous from 0 to
    /// `len`, room for a header and a trailer.
    pub fn parse(bytes: &[u8]) -> Result<Head, String> {
        let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("not a head: {e}"))?;
        head.check()?;
        Ok(head)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != HEAD_FORMAT {
            return Err(format!(
                "head format {} (this build reads {HEAD_FORMAT})",
                self.format
            ));
        }
        if !is_hex(&self.generation, 16) {
            return Err(format!("generation {:?} is not 16 hex digits", self.generation));
        }
        if !is_hex(&self.header_checksum, 16) || !is_hex(&self.trailer_checksum, 16) {
            return Err("a checksum is not 16 hex digits".into());
        }
        if let Some(h) = &self.head_state_hash {
            if !is_hex(h, 32) {
                return Err("the head state hash is not 32 hex digits".into());
            }
        }
        if self.len < HEADER_LEN + TRAILER_LEN {
            return Err(format!(
                "length {} is shorter than a header and a trailer",
                self.len
            ));
        }
        let mut at = 0u64;
        for p in &self.parts {
            if p.start != at || p.len == 0 || !is_hex(&p.checksum, 16) {
                return Err(format!(
                    "part at {} does not follow the previous one (expected {at}) or is empty",
                    p.start
                ));
            }
            at = p.start.checked_add(p.len).ok_or("part length overflows")?;
        }
        if at != self.len {
            return Err(format!("parts cover {at} bytes, the head says {}", self.len));
        }
        Ok(())
    }

    /// The number of leading parts that end exactly at `len`, if any do.
    pub(crate) fn parts_ending_at(&self, len: u64) -> Option<usize> {
        let mut at = 0;
        for (i, p) in self.parts.iter().enumerate() {
            at = p.end();
            if at == len {
                return Some(i + 1);
            }
            if at > len {
                return None;
            }
        }
        (len == at && self.parts.is_empty()).then_some(0)
    }

    /// Whether `bytes` begin with this head's first `n` parts, checked by the header
    /// and the `n`-th part's checksum (not every byte: the prefixes compared are
    /// append-only files, so the last part stands for those before it).
    pub(crate) fn holds_prefix(&self, bytes: &[u8], n: usize) -> bool {
        let Some(last) = n.checked_sub(1).and_then(|i| self.parts.get(i)) else {
            return false;
        };
        let header = bytes.get(..HEADER_LEN as usize);
        let range = usize::try_from(last.start)
            .ok()
            .zip(usize::try_from(last.end()).ok())
            .and_then(|(s, e)| bytes.get(s..e));
        match (header, range) {
            (Some(h), Some(r)) => checksum(h) == self.header_checksum && checksum(r) == last.checksum,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            format: HEAD_FORMAT,
            generation: "0123456789abcdef".into(),
            len: 300,
            seed: 1,
            page_size: 1024,
            header_checksum: checksum(b"h"),
            trailer_checksum: checksum(b"t"),
            head_record: Some(3),
            head_state_hash: Some("0".repeat(32)),
            parts: vec![
                Part {
                    start: 0,
                    len: 200,
                    checksum: checksum(b"a"),
                },
                Part {
                    start: 200,
                    len: 100,
                    checksum: checksum(b"b"),
                },
            ],
        }
    }

    #[test]
    fn a_head_round_trips_and_bad_ones_are_refused() {
        let h = head();
        let bytes = serde_json::to_vec(&h).expect("serialize");
        assert_eq!(Head::parse(&bytes), Ok(h.clone()));
        let mut gap = h.clone();
        gap.parts[1].start = 201;
        assert!(Head::parse(&serde_json::to_vec(&gap).expect("ser")).is_err());
        let mut short = h.clone();
        short.len = 301;
        assert!(Head::parse(&serde_json::to_vec(&short).expect("ser")).is_err());
        let mut gen = h.clone();
        gen.generation = "../../etc".into();
        assert!(Head::parse(&serde_json::to_vec(&gen).expect("ser")).is_err());
        assert!(Head::parse(b"{").is_err());
        assert!(Head::parse(b"").is_err());
    }

    #[test]
    fn parts_ending_at_finds_boundaries_only() {
        let h = head();
        assert_eq!(h.parts_ending_at(200), Some(1));
        assert_eq!(h.parts_ending_at(300), Some(2));
        assert_eq!(h.parts_ending_at(250), None);
        assert_eq!(h.parts_ending_at(400), None);
    }
}
