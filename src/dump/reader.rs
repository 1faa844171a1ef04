//! Memory-mapped, validating dump reader.
//!
//! Contract: [`Dump::open`] either returns a dump whose every tensor lies inside the file, with
//! byte counts matching dtype × shape and no two tensors overlapping, or a [`DumpError`] naming
//! the file and the problem. Nothing is read from the data area before validation; no input,
//! however malformed, panics. Any valid safetensors file opens; a file without a dinodiff manifest
//! gets the implied one (see [`Manifest::implied`]), flagged by [`Dump::has_manifest`].
//!
//! The file is mapped read-only; tensor data is borrowed from the map, so memory use is page
//! cache, not heap. A file modified while mapped is outside the contract.

use super::manifest::{FORMAT_VERSION, MANIFEST_KEY, Manifest};
use crate::model::Stage;
use memmap2::Mmap;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Headers above this size are refused (the safetensors reference reader's own bound).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Why a dump could not be opened. Display: `<path>: <problem>`, then, for a file that was read
/// but is not a dump, what to pass instead ([`NOT_A_DUMP_HINT`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}{}", path.display(), if *advised { "" } else { NOT_A_DUMP_HINT })]
pub struct DumpError {
    pub path: PathBuf,
    pub problem: String,
    /// The problem says what to do itself (a file that cannot be read, a newer format), as
    /// opposed to a file read and found not to be a dump.
    pub advised: bool,
}

/// What to do about a file that is not a dump.
pub const NOT_A_DUMP_HINT: &str = "; pass a safetensors dump (from dinodiff capture, prep or \
     synth, or safetensors' save_file), or capture it again if this one was cut short";

/// One tensor of a dump.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the data area.
    pub start: usize,
    pub end: usize,
}

pub struct Dump {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    /// In execution order (the manifest's `order`, else [`implied_order`]).
    tensors: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    manifest: Manifest,
    has_manifest: bool,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Dump {
    pub fn open(path: &Path) -> Result<Dump, DumpError> {
        let fail = |problem: String| DumpError {
            path: path.to_path_buf(),
            problem,
            advised: false,
        };
        let unreadable = |e: std::io::Error| DumpError {
            path: path.to_path_buf(),
            problem: io_problem(&e),
            advised: true,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a dump file".into()));
        }
        let file = File::open(path).map_err(unreadable)?;
        let size = file.metadata().map_err(unreadable)?.len();
        if size == 0 {
            return Err(fail(
                "empty file (0 bytes); a safetensors dump starts with an 8-byte header length"
                    .into(),
            ));
        }
        if size < 8 {
            return Err(fail(format!(
                "file is {size} bytes, too short for a safetensors dump (at least 8 bytes of header length)"
            )));
        }
        // SAFETY: the map is read-only and private to this process; the contract excludes
        // concurrent modification of the file (documented in docs/dump-format.md).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map: {e}")))?;
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(fail(format!(
                "not a safetensors file: its first 8 bytes give a header length of {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        if header_len > size - 8 {
            return Err(fail(format!(
                "header length {header_len} reaches past the end of the file ({size} bytes): the file is truncated or not a safetensors file"
            )));
        }
        let header = &map[8..8 + header_len as usize];
        if header.first() != Some(&b'{') {
            return Err(fail(
                "not a safetensors file: the header does not start with '{'".into(),
            ));
        }
        let header: HashMap<String, Value> = serde_json::from_slice(header)
            .map_err(|e| fail(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + header_len as usize;
        let data_len = size as usize - data_start;
        let mut metadata: Option<HashMap<String, String>> = None;
        let mut entries = Vec::with_capacity(header.len());
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = Some(
                    serde_json::from_value(value)
                        .map_err(|e| fail(format!("__metadata__ is not a string map: {e}")))?,
                );
                continue;
            }
            entries.push(
                parse_entry(&name, value).map_err(|p| fail(format!("tensor {name:?}: {p}")))?,
            );
        }
        check_layout(&mut entries, data_len).map_err(fail)?;

        let data_order: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        let (manifest, has_manifest) = match metadata.as_ref().and_then(|m| m.get(MANIFEST_KEY)) {
            Some(json) => {
                newer_format(json).map_err(|p| DumpError {
                    path: path.to_path_buf(),
                    problem: p,
                    advised: true,
                })?;
                (parse_manifest(json, &entries).map_err(fail)?, true)
            }
            None => (Manifest::implied(&implied_order(data_order)), false),
        };
        let mut by_name: HashMap<String, TensorEntry> =
            entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        let tensors: Vec<TensorEntry> = manifest
            .order
            .iter()
            .map(|n| by_name.remove(n).expect("checked by parse_manifest"))
            .collect();
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Dump {
            path: path.to_path_buf(),
            map,
            data_start,
            tensors,
            index,
            manifest,
            has_manifest,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// False for plain safetensors files (the manifest is then implied).
    pub fn has_manifest(&self) -> bool {
        self.has_manifest
    }

    /// Tensors in execution order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (validated to lie inside the file).
    pub fn data(&self, entry: &TensorEntry) -> &[u8] {
        &self.map[self.data_start + entry.start..self.data_start + entry.end]
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> usize {
        self.map.len()
    }

    /// Hints the kernel that the whole data area will be read soon, sequentially.
    pub fn advise_sequential(&self) {
        let _ = self.map.advise(memmap2::Advice::Sequential);
        let _ = self.map.advise(memmap2::Advice::WillNeed);
    }
}

/// The execution order of a file without a manifest: the tensors with canonical stage names in
/// stage order (stem, blocks by index and stage, head), then the others in file (data) order.
/// Stock writers (`safetensors.numpy.save_file`) store tensors alphabetically, which is no
/// execution order at all.
pub fn implied_order(mut names: Vec<String>) -> Vec<String> {
    // A stable sort: canonical names first, by stage; the rest keep their file order.
    names.sort_by_key(|n| {
        let stage = Stage::parse(n);
        (stage.is_none(), stage)
    });
    names
}

pub fn io_problem(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file; check the path".into(),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot read: {e}; check the file's permissions")
        }
        _ => format!("cannot read: {e}"),
    }
}

fn parse_entry(name: &str, value: Value) -> Result<TensorEntry, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: (usize, usize),
    }
    let raw: Raw = serde_json::from_value(value)
        .map_err(|e| format!("entry is not {{dtype, shape, data_offsets}}: {e}"))?;
    let dtype: Dtype = serde_json::from_value(Value::String(raw.dtype.clone()))
        .map_err(|_| format!("unknown dtype {:?}", raw.dtype))?;
    let (start, end) = raw.data_offsets;
    if end < start {
        return Err(format!(
            "data_offsets [{start}, {end}] end before they start"
        ));
    }
    let bits = raw
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(|| format!("shape {:?} overflows", raw.shape))?;
    let needed = bits.div_ceil(8);
    if needed != end - start {
        return Err(format!(
            "{dtype} {:?} needs {needed} bytes but data_offsets [{start}, {end}] span {}",
            raw.shape,
            end - start
        ));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape: raw.shape,
        start,
        end,
    })
}

/// Sorts entries by offset and checks bounds, overlaps, gaps and trailing bytes (the safetensors
/// format requires the tensors to tile the data area exactly).
fn check_layout(entries: &mut [TensorEntry], data_len: usize) -> Result<(), String> {
    entries.sort_by_key(|e| (e.start, e.end));
    let mut previous: Option<&TensorEntry> = None;
    for e in entries.iter() {
        if e.end > data_len {
            return Err(format!(
                "tensor {:?}: data_offsets [{}, {}] reach past the end of the data area ({data_len} bytes): the file is truncated",
                e.name, e.start, e.end
            ));
        }
        let expected_start = previous.map_or(0, |p| p.end);
        if e.start < expected_start {
            let p = previous.expect("start < 0 is impossible");
            return Err(format!(
                "tensors {:?} [{}, {}] and {:?} [{}, {}] overlap",
                p.name, p.start, p.end, e.name, e.start, e.end
            ));
        }
        if e.start > expected_start {
            return Err(format!(
                "{} unused bytes before tensor {:?} (data_offsets [{}, {}]): safetensors requires tensors to be contiguous",
                e.start - expected_start,
                e.name,
                e.start,
                e.end
            ));
        }
        previous = Some(e);
    }
    let used = previous.map_or(0, |p| p.end);
    if used != data_len {
        return Err(format!(
            "{} bytes after the last tensor: the header does not describe the whole file",
            data_len - used
        ));
    }
    Ok(())
}

/// Refuses a manifest of a newer format version than this dinodiff reads, saying what to do.
fn newer_format(json: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: Option<u64>,
    }
    match serde_json::from_str::<Version>(json) {
        Ok(Version {
            format_version: Some(v),
        }) if v > u64::from(FORMAT_VERSION) => Err(format!(
            "dump format version {v} is newer than this dinodiff reads ({FORMAT_VERSION}); upgrade dinodiff"
        )),
        _ => Ok(()),
    }
}

fn parse_manifest(json: &str, entries: &[TensorEntry]) -> Result<Manifest, String> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| format!("the dinodiff manifest is not valid JSON: {e}"))?;
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| format!("the dinodiff manifest is malformed: {e}"))?;
    let in_file: std::collections::HashSet<&str> =
        entries.iter().map(|e| e.name.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    for name in &manifest.order {
        if !in_file.contains(name.as_str()) {
            return Err(format!(
                "the manifest lists tensor {name:?}, which the file does not hold"
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("the manifest lists tensor {name:?} twice"));
        }
    }
    if let Some(missing) = entries.iter().find(|e| !seen.contains(e.name.as_str())) {
        return Err(format!(
            "tensor {:?} is missing from the manifest's execution order",
            missing.name
        ));
    }
    Ok(manifest)
}
