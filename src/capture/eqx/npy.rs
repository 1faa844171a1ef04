//! A guard in front of npyz's `.npy` header parser, for the files users hand `capture eqx`
//! (the records of an `.eqx`, the arrays of an `.npz`): npyz reserves a header's claimed size
//! before reading it (up to 4 GiB for a version 2 header) and parses the header's Python literal
//! with backtracking that is exponential in its nesting (14 nested `{` take over 10 s; found by
//! fuzzing the `eqx` target). NumPy writes a one-level dict whose values nest a few levels at
//! most (a structured dtype's list of tuples), and its reader refuses headers over 10,000 bytes.
//!
//! Contract: [`check_header`] reads the magic, the version and the header from a reader, and
//! refuses, before npyz sees it, a header longer than [`MAX_HEADER`] bytes (as NumPy does) or whose brackets
//! (`{`, `[`, `(`, outside quoted strings) nest deeper than [`MAX_NESTING`]. What it cannot read
//! (no magic, an unknown version, a cut header) it leaves for npyz to refuse in its own words.

use anyhow::{Result, bail};
use std::io::Read;

/// What NumPy's own reader accepts by default (`np.load(max_header_size=10000)`).
pub const MAX_HEADER: usize = 10_000;
/// Deeper than a NumPy header nests (dict, list of fields, field tuple, nested struct's list …).
pub const MAX_NESTING: usize = 6;

/// Reads the pre-header and header of one `.npy` record from `r` (see the module docs).
pub fn check_header(mut r: impl Read) -> Result<()> {
    let mut pre = [0u8; 8];
    if r.read_exact(&mut pre).is_err() || &pre[..6] != b"\x93NUMPY" {
        return Ok(());
    }
    let len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            if r.read_exact(&mut b).is_err() {
                return Ok(());
            }
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            if r.read_exact(&mut b).is_err() {
                return Ok(());
            }
            u32::from_le_bytes(b) as usize
        }
        _ => return Ok(()),
    };
    if len > MAX_HEADER {
        bail!("has a {len}-byte header, longer than NumPy reads (at most {MAX_HEADER} bytes)");
    }
    let mut text = Vec::new();
    r.take(len as u64).read_to_end(&mut text)?;
    let depth = nesting(&text);
    if depth > MAX_NESTING {
        bail!("has a header whose brackets nest {depth} deep, deeper than NumPy writes");
    }
    Ok(())
}

/// How deep `{`, `[` and `(` nest in `text`, outside `'…'` and `"…"` strings.
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    let mut escaped = false;
    for &c in text {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'{' | b'[' | b'(' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' | b')' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u8, text: &str) -> Vec<u8> {
        let mut out = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
        match version {
            1 => out.extend((text.len() as u16).to_le_bytes()),
            _ => out.extend((text.len() as u32).to_le_bytes()),
        }
        out.extend(text.as_bytes());
        out
    }

    #[test]
    fn numpy_headers_pass() {
        let plain = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
        assert!(check_header(record(1, plain).as_slice()).is_ok());
        let structured = "{'descr': [('a', '<f4'), ('b', [('c', '<i8', (2,))])], 'fortran_order': False, \
             'shape': (1,), }\n";
        assert_eq!(nesting(structured.as_bytes()), MAX_NESTING);
        assert!(check_header(record(3, structured).as_slice()).is_ok());
        assert_eq!(nesting(b"{'descr': '[[[[[[[[', 'x': \"((((((((\"}"), 1);
        assert!(check_header(&b"PK\x03\x04"[..]).is_ok()); // not npy: npyz says so
    }

    #[test]
    fn deep_or_long_headers_are_refused_before_npyz_reads_them() {
        // What the fuzzer found: nested braces, on which npyz's parser backtracks for ever.
        let deep = format!("{}'descr': '<f4'", "{".repeat(14));
        let e = check_header(record(1, &deep).as_slice())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "has a header whose brackets nest 14 deep, deeper than NumPy writes"
        );
        let mut claim = record(2, "");
        claim[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = check_header(claim.as_slice()).unwrap_err().to_string();
        assert_eq!(
            e,
            "has a 4294967295-byte header, longer than NumPy reads (at most 10000 bytes)"
        );
    }
}
