//! A reader of `torch.save` checkpoints in Rust, without libtorch: generic (it knows nothing of
//! DINOv3 but through the predicate a caller passes in) and zero-copy (a tensor's bytes are a
//! slice of the memory-mapped file).
//!
//! Contract:
//! - [`open`] maps the file, reads its zip container ([`zip`], torch >= 1.6), runs its pickle
//!   through a VM over data with an allow-list of globals ([`pickle`]), finds the state dict and
//!   strips its wrapper prefix ([`container`]), and returns a [`StateDict`]: the map plus name →
//!   [`TensorRef`] in file order, and the [`Provenance`] facts of what was done;
//! - every tensor is checked to lie inside its storage when it is read, so [`TensorView::bytes`]
//!   and [`TensorView::contiguous_le_bytes`] cannot fail;
//! - the legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`) is detected and
//!   refused with the command that re-saves it; so is everything that is not a `torch.save` file;
//! - every failure is an `Err` naming the file and what is wrong in it; nothing panics, nothing
//!   from the file is executed;
//! - the file must not change while a [`StateDict`] maps it (as for every memory map).

pub mod container;
pub mod pickle;
pub mod tensor;
pub mod zip;

#[cfg(test)]
mod tests;

use anyhow::Result;
use memmap2::Mmap;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

pub use container::{Choice, Shapes};
pub use safetensors::Dtype;
pub use tensor::TensorRef;

/// What to take from the checkpoint.
pub struct Selection<'a> {
    /// `--key a.b`: dict keys from the root, then a name prefix (`""` = the root dict).
    pub key: Option<&'a str>,
    /// Whether a name → shape map is the state dict the caller wants.
    pub accept: &'a dyn Fn(&Shapes) -> bool,
}

/// What was read and how the state dict was found (for stderr and a dump's manifest).
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub path: String,
    pub file_bytes: u64,
    /// The archive's top folder (`<archive>/data.pkl`).
    pub archive: String,
    /// `little` or `big` (the archive's `byteorder` entry; absent = little).
    pub byteorder: String,
    /// The archive's `.format_version` entry, when present.
    pub format_version: Option<String>,
    /// `OrderedDict` (what `state_dict()` returns) or `dict`.
    pub container: String,
    /// Dotted dict keys from the root to the state dict (`""` = the root).
    pub key: String,
    /// The prefix stripped from every name (`""` = none).
    pub prefix: String,
    pub choice: Choice,
    /// Whether the caller's predicate accepted the key set.
    pub accepted: bool,
    pub tensors: usize,
    /// Bytes of the tensors' values (row-major; shared storages counted once per tensor).
    pub tensor_bytes: u64,
    /// Dtype name → number of tensors.
    pub dtypes: BTreeMap<String, usize>,
    /// Tensors of the chosen dict outside the prefix (a model's other heads, …).
    pub left_out: usize,
    /// Entries of the chosen dict that are not tensors (`name (kind)`).
    pub skipped: Vec<String>,
}

/// The state dict of a checkpoint, mapped.
pub struct StateDict {
    map: Mmap,
    storages: HashMap<String, Range<usize>>,
    tensors: Vec<(String, TensorRef)>,
    big_endian: bool,
    pub provenance: Provenance,
}

/// One tensor of a [`StateDict`].
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub info: &'a TensorRef,
    storage: &'a [u8],
    big_endian: bool,
}

impl<'a> TensorView<'a> {
    pub fn dtype(&self) -> Dtype {
        self.info.dtype
    }

    pub fn shape(&self) -> &'a [usize] {
        &self.info.shape
    }

    pub fn strides(&self) -> &'a [usize] {
        &self.info.strides
    }

    /// The bytes of the whole storage the tensor views, in the archive's byte order.
    pub fn storage_bytes(&self) -> &'a [u8] {
        self.storage
    }

    /// The tensor's values as stored, when that is a copy-free row-major slice of the file
    /// (contiguous and little-endian); `None` otherwise.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self.contiguous_le_bytes() {
            Cow::Borrowed(b) => Some(b),
            Cow::Owned(_) => None,
        }
    }

    /// The values row-major contiguous, little-endian: borrowed from the map when possible.
    pub fn contiguous_le_bytes(&self) -> Cow<'a, [u8]> {
        tensor::contiguous_bytes(self.info, self.storage, self.big_endian)
    }
}

impl StateDict {
    /// The tensors in file order (names after prefix stripping).
    /// The whole mapped file.
    pub fn mapped(&self) -> &[u8] {
        &self.map
    }

    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors
            .iter()
            .map(|(name, info)| self.view(name, info))
    }

    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let (name, info) = self.tensors.iter().find(|(n, _)| n == name)?;
        Some(self.view(name, info))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Name → shape, as the predicate saw it.
    pub fn shapes(&self) -> Shapes {
        self.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect()
    }

    fn view<'a>(&'a self, name: &'a str, info: &'a TensorRef) -> TensorView<'a> {
        // Every tensor's storage was located when the file was read.
        let range = self.storages.get(&info.storage).cloned().unwrap_or(0..0);
        TensorView {
            name,
            info,
            storage: &self.map[range],
            big_endian: self.big_endian,
        }
    }
}

/// The legacy (non-zip) format starts with a pickle of torch's magic number (`LONG1` of 10
/// bytes), right after `PROTO` (and a `FRAME` header at protocol 4 and later).
const LEGACY_MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

fn is_legacy(b: &[u8]) -> bool {
    b.starts_with(b"\x80")
        && b[..b.len().min(32)]
            .windows(LEGACY_MAGIC.len())
            .any(|w| w == LEGACY_MAGIC)
}

/// What [`read`] finds in the bytes of a file: everything but the map itself.
struct Layout {
    storages: HashMap<String, Range<usize>>,
    chosen: container::Chosen,
    archive: String,
    big_endian: bool,
    format_version: Option<String>,
}

/// Reads the checkpoint at `path` and finds its state dict (see the module contract).
pub fn open(path: &Path, selection: &Selection) -> Result<StateDict> {
    let shown = path.display();
    let fail = |what: String| anyhow::anyhow!("cannot read the checkpoint {shown}: {what}");
    let file = std::fs::File::open(path).map_err(|e| fail(crate::dump::reader::io_problem(&e)))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(crate::dump::reader::io_problem(&e)))?;
    if meta.is_dir() {
        return Err(fail("it is a directory, not a .pth file".into()));
    }
    if meta.len() == 0 {
        return Err(fail("the file is empty (0 bytes)".into()));
    }
    // SAFETY: the map is read-only and private to this process; the contract excludes changing
    // the file while it is mapped.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map it: {e}")))?;
    let layout = read(&map, path, selection).map_err(fail)?;
    let chosen = layout.chosen;
    let mut dtypes = BTreeMap::new();
    for (_, t) in &chosen.tensors {
        *dtypes.entry(t.dtype.to_string()).or_insert(0) += 1;
    }
    let provenance = Provenance {
        path: shown.to_string(),
        file_bytes: meta.len(),
        archive: layout.archive,
        byteorder: if layout.big_endian { "big" } else { "little" }.into(),
        format_version: layout.format_version,
        container: if chosen.ordered {
            "OrderedDict"
        } else {
            "dict"
        }
        .into(),
        key: chosen.key,
        prefix: chosen.prefix,
        choice: chosen.choice,
        accepted: chosen.accepted,
        tensors: chosen.tensors.len(),
        tensor_bytes: chosen.tensors.iter().map(|(_, t)| t.nbytes() as u64).sum(),
        dtypes,
        left_out: chosen.left_out,
        skipped: chosen.skipped,
    };
    Ok(StateDict {
        map,
        storages: layout.storages,
        tensors: chosen.tensors,
        big_endian: layout.big_endian,
        provenance,
    })
}

fn small_entry(b: &[u8], archive: &zip::Archive, name: &str) -> Result<Option<String>, String> {
    Ok(archive
        .entry(b, name)?
        .map(|r| String::from_utf8_lossy(&b[r]).trim().to_string()))
}

/// Everything [`open`] does on the bytes of the file; errors without the file name.
fn read(b: &[u8], path: &Path, selection: &Selection) -> Result<Layout, String> {
    if is_legacy(b) {
        return Err(legacy_message(path));
    }
    if !b.starts_with(b"PK\x03\x04") {
        return Err(format!(
            "it is not a torch.save checkpoint: a .pth written by torch >= 1.6 is a zip archive, \
             and this file ({} bytes) does not start like one; pass the .pth file that \
             torch.save wrote",
            b.len()
        ));
    }
    let archive = zip::Archive::parse(b)?;
    let big_endian = match small_entry(b, &archive, "byteorder")?.as_deref() {
        None | Some("little") => false,
        Some("big") => true,
        Some(other) => return Err(format!("its byteorder entry says {other:?}")),
    };
    let format_version = small_entry(b, &archive, ".format_version")?;
    let pickle = archive.entry(b, "data.pkl")?.ok_or("it has no data.pkl")?;
    let mut storages = HashMap::new();
    let bytes_of = |key: &str| -> Result<usize, String> {
        let r = archive.entry(b, &format!("data/{key}"))?.ok_or_else(|| {
            format!("the pickle refers to storage `data/{key}`, which the archive lacks")
        })?;
        Ok(r.len())
    };
    let unpickled = pickle::unpickle(&b[pickle], &bytes_of).map_err(|e| format!("data.pkl {e}"))?;
    let chosen = container::choose(&unpickled, selection.key, selection.accept)?;
    for (_, t) in &chosen.tensors {
        if !storages.contains_key(&t.storage) {
            let r = archive
                .entry(b, &format!("data/{}", t.storage))?
                .ok_or_else(|| format!("storage `data/{}` is missing", t.storage))?;
            storages.insert(t.storage.clone(), r);
        }
    }
    Ok(Layout {
        storages,
        chosen,
        archive: archive.prefix.clone(),
        big_endian,
        format_version,
    })
}

/// The refusal of the legacy format, with the command that converts the file.
fn legacy_message(path: &Path) -> String {
    let old = path.display().to_string();
    let new = match old.strip_suffix(".pth") {
        Some(stem) => format!("{stem}.zip.pth"),
        None => format!("{old}.zip.pth"),
    };
    format!(
        "it is in torch's legacy format (written by torch < 1.6 or with \
         _use_new_zipfile_serialization=False), which dinodiff does not read. Convert it once \
         with: python -c \"import torch; torch.save(torch.load({}, weights_only=True), {})\" \
         and pass {new}",
        python_str(&old),
        python_str(&new)
    )
}

/// A single-quoted Python string literal.
fn python_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One row of `dinodiff checkpoint`: a tensor, and the sha256 of its row-major little-endian
/// values when asked for.
#[derive(Debug, Clone, Serialize)]
pub struct TensorListing {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub storage: String,
    pub storage_offset: usize,
    pub contiguous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What `dinodiff checkpoint` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub schema: &'static str,
    pub provenance: Provenance,
    pub tensors: Vec<TensorListing>,
}

/// The listing of a state dict; `hashes` computes each tensor's sha256 (in parallel).
pub fn listing(sd: &StateDict, hashes: bool) -> Listing {
    use rayon::prelude::*;
    let views: Vec<TensorView> = sd.tensors().collect();
    let tensors = views
        .par_iter()
        .map(|v| TensorListing {
            name: v.name.to_string(),
            dtype: v.dtype().to_string(),
            shape: v.shape().to_vec(),
            strides: v.strides().to_vec(),
            storage: v.info.storage.clone(),
            storage_offset: v.info.storage_offset,
            contiguous: v.info.is_contiguous(),
            sha256: hashes.then(|| crate::dump::manifest::sha256_hex(&v.contiguous_le_bytes())),
        })
        .collect();
    Listing {
        schema: "dinodiff.checkpoint/1",
        provenance: sd.provenance.clone(),
        tensors,
    }
}
