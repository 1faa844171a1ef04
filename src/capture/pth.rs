//! A first look at a `.pth` file before libtorch parses it, so that the common mistakes get a
//! clear error instead of a C++ stack trace: a missing or unreadable file, a file that is not a
//! `torch.save` zip archive, an archive cut short.
//!
//! Contract: [`sniff`] reads the first 4 bytes and the last 64 KiB + 22 bytes of the file. A
//! `torch.save` checkpoint (PyTorch >= 1.6) is a zip archive: it starts with a local file header
//! (`PK\x03\x04`) and ends with an end-of-central-directory record (`PK\x05\x06`, or the zip64
//! locator before it). A file passing the sniff may still fail in libtorch; that error is reported
//! as libtorch gives it.

use anyhow::{Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const LOCAL_HEADER: &[u8; 4] = b"PK\x03\x04";
const END_OF_CENTRAL_DIRECTORY: &[u8; 4] = b"PK\x05\x06";
/// The end record is 22 bytes plus a comment of at most 65535 bytes.
const TAIL: u64 = 22 + 65_535;

/// Checks that `path` looks like a complete `torch.save` zip archive; returns its size.
pub fn sniff(path: &Path) -> Result<u64> {
    let shown = path.display();
    let open = File::open(path).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    let (mut file, meta) = match open {
        Ok(x) => x,
        Err(e) => bail!(
            "cannot read the checkpoint {shown}: {}",
            crate::dump::reader::io_problem(&e)
        ),
    };
    if meta.is_dir() {
        bail!("the checkpoint {shown} is a directory, not a .pth file");
    }
    let size = meta.len();
    let mut head = [0u8; 4];
    let got = read_up_to(&mut file, &mut head)
        .map_err(|e| anyhow::anyhow!("cannot read the checkpoint {shown}: {e}"))?;
    if got < 4 || &head != LOCAL_HEADER {
        bail!(
            "{shown} is not a PyTorch checkpoint: a .pth written by torch.save is a zip archive, \
             and this file does not start like one ({size} bytes). Pass Meta's .pth file \
             (or write one with tools/make_meta_checkpoint.py)"
        );
    }
    let start = size.saturating_sub(TAIL);
    let mut tail = Vec::with_capacity((size - start) as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(|e| anyhow::anyhow!("cannot read the checkpoint {shown}: {e}"))?;
    if !tail.windows(4).any(|w| w == END_OF_CENTRAL_DIRECTORY) {
        bail!(
            "the checkpoint {shown} is truncated: it starts as a zip archive but has no end record \
             ({size} bytes). Was a download or copy cut short? Fetch the file again"
        );
    }
    Ok(size)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn a_complete_zip_passes() {
        let mut bytes = LOCAL_HEADER.to_vec();
        bytes.extend([0u8; 100]);
        bytes.extend(END_OF_CENTRAL_DIRECTORY);
        bytes.extend([0u8; 18]);
        let f = file_with(&bytes);
        assert_eq!(sniff(f.path()).unwrap(), bytes.len() as u64);
    }

    #[test]
    fn other_files_and_cut_archives_are_named() {
        let f = file_with(b"{\"not\": \"a checkpoint\"}");
        let e = sniff(f.path()).unwrap_err().to_string();
        assert!(e.contains("is not a PyTorch checkpoint"), "{e}");
        let f = file_with(b"PK");
        assert!(
            sniff(f.path())
                .unwrap_err()
                .to_string()
                .contains("is not a PyTorch checkpoint")
        );
        let mut bytes = LOCAL_HEADER.to_vec();
        bytes.extend([7u8; 200_000]);
        let f = file_with(&bytes);
        let e = sniff(f.path()).unwrap_err().to_string();
        assert!(e.contains("is truncated"), "{e}");
    }
}
