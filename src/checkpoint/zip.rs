//! The zip container of `torch.save` (PyTorch >= 1.6), read in place from a byte slice (the
//! memory map of the file): only the central directory is parsed, and each entry becomes a byte
//! range of the file.
//!
//! Contract:
//! - [`Archive::parse`] reads the end record (zip64 too: checkpoints over 4 GiB), the central
//!   directory and each entry's local header; every offset and length is bounds-checked against
//!   the file, so a truncated or malformed archive is an `Err`, never a panic;
//! - an entry is usable only if it is stored (method 0, as `torch.save` writes every entry) with
//!   equal compressed and uncompressed sizes; [`Archive::entry`] refuses any other, naming it;
//! - the archive's top folder (`<archive>/`) is taken from `<archive>/data.pkl`;
//! - CRCs are not checked (that would read every byte of a multi-GB file); truncation is caught
//!   by the bounds checks.
//!
//! Written here rather than with the `zip` crate: the reader needs only the data offsets, and a
//! few bounds-checked lines keep the no-panic guarantee under our own tests.

use std::collections::HashMap;
use std::ops::Range;

const END: u32 = 0x0605_4b50;
const END64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;
const END_LEN: usize = 22;
const MAX_COMMENT: usize = 65_535;

/// One entry of the central directory.
#[derive(Debug, Clone)]
struct Entry {
    method: u16,
    compressed: u64,
    size: u64,
    local_header: u64,
}

/// The entries of a `torch.save` archive, by name.
#[derive(Debug)]
pub struct Archive {
    /// The top folder: entries are `<prefix>/data.pkl`, `<prefix>/data/<key>`, …
    pub prefix: String,
    entries: HashMap<String, Entry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Where the central directory is: (offset, size, entry count).
fn central_directory(b: &[u8]) -> Result<(u64, u64, u64), String> {
    let lowest = b.len().saturating_sub(END_LEN + MAX_COMMENT);
    let end = (lowest..=b.len().saturating_sub(END_LEN))
        .rev()
        .find(|&at| u32_at(b, at) == Some(END))
        .ok_or(
            "it has no zip end record: the file is truncated (a download or copy cut short?) \
             or is not a torch.save archive; fetch or copy it again",
        )?;
    let bad = || "its zip end record is cut short".to_string();
    let count = u16_at(b, end + 10).ok_or_else(bad)?;
    let size = u32_at(b, end + 12).ok_or_else(bad)?;
    let offset = u32_at(b, end + 16).ok_or_else(bad)?;
    let zip64 = count == u16::MAX || size == u32::MAX || offset == u32::MAX;
    if !zip64 {
        return Ok((offset.into(), size.into(), count.into()));
    }
    let bad = || "its zip64 end records are missing or cut short".to_string();
    let locator = end.checked_sub(20).ok_or_else(bad)?;
    if u32_at(b, locator) != Some(LOCATOR64) {
        return Err(bad());
    }
    let record = usize::try_from(u64_at(b, locator + 8).ok_or_else(bad)?).map_err(|_| bad())?;
    if u32_at(b, record) != Some(END64) {
        return Err(bad());
    }
    let count = u64_at(b, record + 32).ok_or_else(bad)?;
    let size = u64_at(b, record + 40).ok_or_else(bad)?;
    let offset = u64_at(b, record + 48).ok_or_else(bad)?;
    Ok((offset, size, count))
}

/// The zip64 extended information (extra field 0x0001) replaces the fields set to all ones.
fn apply_zip64(extra: &[u8], e: &mut Entry) -> Option<()> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (id, len) = (u16_at(extra, at)?, usize::from(u16_at(extra, at + 2)?));
        let body = extra.get(at + 4..at + 4 + len)?;
        if id == 1 {
            let mut pos = 0;
            for field in [&mut e.size, &mut e.compressed, &mut e.local_header] {
                if *field == u64::from(u32::MAX) {
                    *field = u64_at(body, pos)?;
                    pos += 8;
                }
            }
        }
        at += 4 + len;
    }
    Some(())
}

impl Archive {
    /// Reads the central directory of the archive `b`.
    pub fn parse(b: &[u8]) -> Result<Archive, String> {
        let (offset, size, count) = central_directory(b)?;
        let cd = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| b.get(o..o.checked_add(s)?))
            .ok_or("its zip central directory lies outside the file (truncated?)")?;
        let mut entries = HashMap::new();
        let mut first = None;
        let mut at = 0usize;
        for i in 0..count {
            let bad = || format!("zip central directory entry {i} is malformed or cut short");
            if u32_at(cd, at) != Some(CENTRAL) {
                return Err(bad());
            }
            let field = |off: usize| u32_at(cd, at + off).map(u64::from).ok_or_else(bad);
            let mut e = Entry {
                method: u16_at(cd, at + 10).ok_or_else(bad)?,
                compressed: field(20)?,
                size: field(24)?,
                local_header: field(42)?,
            };
            let name_len = usize::from(u16_at(cd, at + 28).ok_or_else(bad)?);
            let extra_len = usize::from(u16_at(cd, at + 30).ok_or_else(bad)?);
            let comment_len = usize::from(u16_at(cd, at + 32).ok_or_else(bad)?);
            let name = cd.get(at + 46..at + 46 + name_len).ok_or_else(bad)?;
            let name = String::from_utf8_lossy(name).into_owned();
            let extra_at = at + 46 + name_len;
            let extra = cd.get(extra_at..extra_at + extra_len).ok_or_else(bad)?;
            apply_zip64(extra, &mut e).ok_or_else(bad)?;
            at = extra_at + extra_len + comment_len;
            first.get_or_insert_with(|| name.clone());
            entries.insert(name, e);
        }
        let prefix = first
            .as_deref()
            .and_then(|n| n.split_once('/'))
            .map(|(p, _)| p.to_string())
            .filter(|p| entries.contains_key(&format!("{p}/data.pkl")))
            .or_else(|| {
                entries
                    .keys()
                    .filter_map(|n| n.strip_suffix("/data.pkl"))
                    .find(|p| !p.contains('/'))
                    .map(str::to_string)
            })
            .ok_or(
                "it is a zip archive without a `<name>/data.pkl` entry, not a torch.save file",
            )?;
        Ok(Archive { prefix, entries })
    }

    /// Whether `<prefix>/<name>` exists.
    pub fn has(&self, name: &str) -> bool {
        self.entries
            .contains_key(&format!("{}/{name}", self.prefix))
    }

    /// The byte range of the data of `<prefix>/<name>` in `b`, or `Ok(None)` when there is no
    /// such entry; an entry that is compressed or lies outside the file is an error naming it.
    pub fn entry(&self, b: &[u8], name: &str) -> Result<Option<Range<usize>>, String> {
        let full = format!("{}/{name}", self.prefix);
        let Some(e) = self.entries.get(&full) else {
            return Ok(None);
        };
        if e.method != 0 || e.compressed != e.size {
            return Err(format!(
                "the zip entry `{full}` is compressed (method {}); torch.save stores entries \
                 uncompressed so that they can be mapped in place: was the file re-zipped? \
                 Load it with torch and save it again with torch.save",
                e.method
            ));
        }
        let cut = || format!("the zip entry `{full}` lies outside the file (truncated?)");
        let local = usize::try_from(e.local_header).map_err(|_| cut())?;
        if u32_at(b, local) != Some(LOCAL) {
            return Err(cut());
        }
        let name_len = usize::from(u16_at(b, local + 26).ok_or_else(cut)?);
        let extra_len = usize::from(u16_at(b, local + 28).ok_or_else(cut)?);
        let start = local + 30 + name_len + extra_len;
        let end = usize::try_from(e.size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&end| end <= b.len())
            .ok_or_else(cut)?;
        Ok(Some(start..end))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stored zip archive of `files`, with each entry's data at a 64-byte aligned offset.
    pub fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u32;
            let unpadded = out.len() + 30 + name.len() + 4;
            let pad = (64 - unpadded % 64) % 64;
            out.extend(LOCAL.to_le_bytes());
            out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(((pad + 4) as u16).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend([0xfb, 0x4b]);
            out.extend((pad as u16).to_le_bytes());
            out.extend(std::iter::repeat_n(b'Z', pad));
            out.extend(*data);
            central.extend(CENTRAL.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend(END.to_le_bytes());
        out.extend([0, 0, 0, 0]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend([0, 0]);
        out
    }

    #[test]
    fn entries_are_byte_ranges_of_the_file() {
        let zip = stored_zip(&[("ck/data.pkl", b"\x80\x02N."), ("ck/data/0", b"abcd")]);
        let a = Archive::parse(&zip).unwrap();
        assert_eq!(a.prefix, "ck");
        let r = a.entry(&zip, "data/0").unwrap().unwrap();
        assert_eq!(r.start % 64, 0);
        assert_eq!(&zip[r], b"abcd");
        assert!(a.entry(&zip, "data/1").unwrap().is_none());
        assert!(a.has("data.pkl") && !a.has("byteorder"));
    }

    /// `zip` with its end record moved to zip64 records (counts, sizes and offsets all ones).
    fn as_zip64(mut zip: Vec<u8>) -> Vec<u8> {
        let end = zip.split_off(zip.len() - END_LEN);
        let count = u64::from(u16_at(&end, 10).unwrap());
        let size = u64::from(u32_at(&end, 12).unwrap());
        let offset = u64::from(u32_at(&end, 16).unwrap());
        let record = zip.len() as u64;
        zip.extend(END64.to_le_bytes());
        zip.extend(44u64.to_le_bytes());
        zip.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [count, count, size, offset] {
            zip.extend(v.to_le_bytes());
        }
        zip.extend(LOCATOR64.to_le_bytes());
        zip.extend(0u32.to_le_bytes());
        zip.extend(record.to_le_bytes());
        zip.extend(1u32.to_le_bytes());
        zip.extend(END.to_le_bytes());
        zip.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        zip.extend([0xff; 8]);
        zip.extend([0, 0]);
        zip
    }

    #[test]
    fn zip64_end_records_are_followed() {
        let zip = as_zip64(stored_zip(&[
            ("ck/data.pkl", b"\x80\x02N."),
            ("ck/data/0", b"abcd"),
        ]));
        let a = Archive::parse(&zip).unwrap();
        assert_eq!(&zip[a.entry(&zip, "data/0").unwrap().unwrap()], b"abcd");
        let mut e = Entry {
            method: 0,
            compressed: u32::MAX.into(),
            size: 7,
            local_header: u32::MAX.into(),
        };
        let extra = [
            &[1u8, 0, 16, 0][..],
            &5u64.to_le_bytes(),
            &9u64.to_le_bytes(),
        ]
        .concat();
        apply_zip64(&extra, &mut e).unwrap();
        assert_eq!((e.size, e.compressed, e.local_header), (7, 5, 9));
        assert!(apply_zip64(&extra[..12], &mut e).is_none());
        let mut cut = zip.clone();
        let locator = cut.len() - END_LEN - 20;
        cut[locator + 8] = 0xee;
        assert!(Archive::parse(&cut).unwrap_err().contains("zip64"));
    }

    #[test]
    fn compressed_and_cut_archives_are_refused() {
        let mut zip = stored_zip(&[("ck/data.pkl", b"\x80\x02N.")]);
        let cd = zip.len() - 22 - 46 - "ck/data.pkl".len();
        zip[cd + 10] = 8;
        let a = Archive::parse(&zip).unwrap();
        let e = a.entry(&zip, "data.pkl").unwrap_err();
        assert!(e.contains("`ck/data.pkl` is compressed (method 8)"), "{e}");
        let zip = stored_zip(&[("ck/data.pkl", b"\x80\x02N.")]);
        for cut in 0..zip.len() {
            if let Ok(a) = Archive::parse(&zip[..cut]) {
                let _ = a.entry(&zip[..cut], "data.pkl");
            }
        }
        let e = Archive::parse(&stored_zip(&[("ck/x", b"")])).unwrap_err();
        assert!(e.contains("without a `<name>/data.pkl`"), "{e}");
    }
}
