//! Streaming, atomic dump writer.
//!
//! Contract:
//! - tensors are appended one at a time with [`DumpWriter::write`]; their bytes go straight to a
//!   temporary data file beside the target, so memory use does not grow with the dump;
//! - [`DumpWriter::finish`] writes the safetensors header (with the manifest) and the data into a
//!   second temporary file in the target's directory, syncs it and renames it onto the target: the
//!   target path only ever holds a complete dump. A writer made with [`DumpWriter::create_for`]
//!   leaves room for the header in front of the data, so `finish` writes the header there
//!   (padded with spaces) and renames the data file itself, without copying the data. A writer
//!   dropped before `finish` leaves nothing, neither at the target nor beside it;
//! - the temporary files are registered with [`crate::cleanup`], and the rename onto the target is
//!   its commit: SIGINT or SIGTERM removes them and leaves no target, or comes after the rename
//!   and leaves the complete dump. Only SIGKILL may leave `.NAME.partial-*` / `.NAME.data-*`
//!   files beside the target, never the target itself;
//! - tensor names are unique; the data order is the write order, which is also the manifest's
//!   execution order;
//! - a tensor named `input` fixes the manifest's `input_sha256` (or must agree with it).

use super::manifest::{FORMAT_VERSION, FORMAT_VERSION_KEY, MANIFEST_KEY, Manifest, TensorRecord};
use crate::cleanup::{self, Registration};
use anyhow::{Context, Result, bail, ensure};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};
use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// What [`DumpWriter::finish`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenDump {
    pub path: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
}

pub struct DumpWriter {
    target: PathBuf,
    data: BufWriter<NamedTempFile>,
    /// The data file's path, for removal on a signal (after `data`: dropped after it).
    data_registration: Registration,
    infos: Vec<(String, TensorInfo)>,
    names: HashSet<String>,
    offset: usize,
    manifest: Manifest,
    /// Bytes left at the start of the data file for the header (0: none, copy at finish).
    reserve: u64,
}

impl DumpWriter {
    /// Starts a dump that will appear at `target` when [`finish`](Self::finish) succeeds.
    pub fn create(target: &Path, manifest: Manifest) -> Result<DumpWriter> {
        Self::create_inner(target, manifest, 0)
    }

    /// Like [`create`](Self::create), for a writer that knows about how many tensors will come:
    /// room for the header is left at the start of the data file, so that `finish` writes the
    /// header in place (padded with spaces, as safetensors allows) instead of copying the data
    /// behind it. When the header turns out larger than the room, `finish` copies as usual.
    pub fn create_for(target: &Path, manifest: Manifest, tensors: usize) -> Result<DumpWriter> {
        let manifest_len = serde_json::to_vec(&manifest).map_or(0, |m| m.len());
        // Per tensor: its header entry (~100 bytes) and its manifest record and order entry
        // (~150 bytes plus the native name), escaped once more inside the metadata string.
        let reserve = (2 * manifest_len + 64 * 1024 + 1024 * tensors).next_multiple_of(8);
        Self::create_inner(target, manifest, reserve as u64)
    }

    fn create_inner(target: &Path, manifest: Manifest, reserve: u64) -> Result<DumpWriter> {
        if target.is_dir() {
            bail!(
                "cannot write the dump {}: it is a directory; -o must name a file",
                target.display()
            );
        }
        let dir = parent_dir(target);
        let mut builder = tempfile::Builder::new();
        // The data file becomes the dump when the header fits in front of it.
        #[cfg(unix)]
        if reserve > 0 {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let prefix = temp_prefix(target, "data");
        let (mut data, data_registration) =
            cleanup::register(|| builder.prefix(&prefix).tempfile_in(&dir), |f| f.path())
                .map_err(|e| cannot_start(target, &dir, &e))?;
        data.as_file_mut()
            .seek(SeekFrom::Start(reserve))
            .with_context(|| format!("preparing the dump {}", target.display()))?;
        Ok(DumpWriter {
            target: target.to_path_buf(),
            data: BufWriter::with_capacity(1 << 20, data),
            data_registration,
            infos: Vec::new(),
            names: HashSet::new(),
            offset: 0,
            manifest,
            reserve,
        })
    }

    /// Appends one tensor. `data` is its raw little-endian, row-major bytes.
    pub fn write(
        &mut self,
        name: &str,
        record: TensorRecord,
        dtype: Dtype,
        shape: &[usize],
        data: &[u8],
    ) -> Result<()> {
        ensure!(
            !name.is_empty() && name != "__metadata__",
            "invalid tensor name {name:?}"
        );
        ensure!(
            self.names.insert(name.to_string()),
            "tensor {name:?} written twice to {}",
            self.target.display()
        );
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let expected = elements
            .and_then(|n| n.checked_mul(dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        let Some(expected) = expected else {
            bail!(
                "tensor {name:?}: {dtype} {shape:?} has more bytes than this machine can address"
            );
        };
        ensure!(
            expected == data.len(),
            "tensor {name:?}: {dtype} {shape:?} needs {expected} bytes, got {}",
            data.len()
        );
        if name == crate::model::INPUT_NAME {
            let hash = super::manifest::sha256_hex(data);
            match &self.manifest.input_sha256 {
                Some(declared) if *declared != hash => bail!(
                    "the input tensor written to {} has sha256 {hash}, but the manifest declares {declared}",
                    self.target.display()
                ),
                _ => self.manifest.input_sha256 = Some(hash),
            }
        }
        self.data
            .write_all(data)
            .with_context(|| format!("writing tensor {name:?} for {}", self.target.display()))?;
        let end = self.offset + data.len();
        self.infos.push((
            name.to_string(),
            TensorInfo {
                dtype,
                shape: shape.to_vec(),
                data_offsets: (self.offset, end),
            },
        ));
        self.offset = end;
        self.manifest.order.push(name.to_string());
        self.manifest.tensors.insert(name.to_string(), record);
        Ok(())
    }

    /// Adds a backend-wide fact to the manifest (`extra`), e.g. one learnt while capturing.
    pub fn annotate(&mut self, key: &str, value: serde_json::Value) {
        self.manifest.extra.insert(key.to_string(), value);
    }

    /// Records the model file (size, sha256), when it is known only after the tensors (a hash
    /// computed while the capture runs).
    pub fn set_model(&mut self, model: super::manifest::FileIdentity) {
        self.manifest.model = Some(model);
    }

    /// Writes header + data to a temporary file and renames it onto the target.
    pub fn finish(self) -> Result<WrittenDump> {
        let DumpWriter {
            target,
            data,
            data_registration,
            infos,
            manifest,
            reserve,
            ..
        } = self;
        let tensors = infos.len();
        let mut header = header_bytes(&manifest, infos)?;
        let mut data = data
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing the data of {}", target.display()))?;
        let context = || format!("writing {}", target.display());
        if reserve > 0 && 8 + header.len() as u64 <= reserve {
            header.resize(reserve as usize - 8, b' ');
            let file = data.as_file_mut();
            file.seek(SeekFrom::Start(0)).with_context(context)?;
            file.write_all(&(header.len() as u64).to_le_bytes())
                .with_context(context)?;
            file.write_all(&header).with_context(context)?;
            file.sync_all().with_context(context)?;
            let bytes = file.metadata().with_context(context)?.len();
            data_registration
                .commit(|| data.persist(&target))
                .map_err(|e| cannot_rename(&target, &e.error))?;
            return Ok(WrittenDump {
                path: target,
                tensors,
                bytes,
            });
        }
        let dir = parent_dir(&target);
        let mut builder = tempfile::Builder::new();
        // A finished dump gets the permissions of any new file (0666 minus the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let prefix = temp_prefix(&target, "partial");
        let (out, out_registration) =
            cleanup::register(|| builder.prefix(&prefix).tempfile_in(&dir), |f| f.path())
                .map_err(|e| cannot_start(&target, &dir, &e))?;
        let mut out_file = out.as_file();
        out_file
            .write_all(&(header.len() as u64).to_le_bytes())
            .with_context(context)?;
        out_file.write_all(&header).with_context(context)?;
        let data_file = data.as_file_mut();
        data_file
            .seek(SeekFrom::Start(reserve))
            .with_context(context)?;
        // std::io::copy uses copy_file_range on Linux: an in-kernel copy, no user-space buffer.
        std::io::copy(data_file, &mut out_file).with_context(context)?;
        out_file.sync_all().with_context(context)?;
        let bytes = out_file.metadata().with_context(context)?.len();
        drop(data); // removes the data temp file
        drop(data_registration);
        out_registration
            .commit(|| out.persist(&target))
            .map_err(|e| cannot_rename(&target, &e.error))?;
        Ok(WrittenDump {
            path: target,
            tensors,
            bytes,
        })
    }
}

/// The safetensors header JSON (padded with spaces to a multiple of 8 bytes, as the format allows),
/// built through the safetensors crate's own metadata type so stock readers agree with it.
fn header_bytes(manifest: &Manifest, infos: Vec<(String, TensorInfo)>) -> Result<Vec<u8>> {
    let manifest_json = serde_json::to_string(manifest).context("serializing the manifest")?;
    let metadata: HashMap<String, String> = [
        (MANIFEST_KEY.to_string(), manifest_json),
        (FORMAT_VERSION_KEY.to_string(), FORMAT_VERSION.to_string()),
    ]
    .into_iter()
    .collect();
    let metadata = Metadata::new(Some(metadata), infos)
        .map_err(|e| anyhow::anyhow!("inconsistent tensor table: {e}"))?;
    let mut header = serde_json::to_vec(&metadata).context("serializing the header")?;
    let padded = header.len().next_multiple_of(8);
    header.resize(padded, b' ');
    Ok(header)
}

/// Why a dump cannot be started at `target` (no temporary file in its directory `dir`), and
/// what to do.
fn cannot_start(target: &Path, dir: &Path, e: &std::io::Error) -> anyhow::Error {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "the directory {} does not exist; create it or choose another -o",
            dir.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "no permission to create files in {}; choose another -o",
            dir.display()
        ),
        _ => format!(
            "cannot create a temporary file in {} ({e}); check that it is a writable directory",
            dir.display()
        ),
    };
    anyhow::anyhow!("cannot write the dump {}: {why}", target.display())
}

/// Why the finished dump cannot be renamed onto `target`, and what to do.
fn cannot_rename(target: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot put the finished dump at {}: {e}; -o must name a file (not a directory) in a \
         writable directory",
        target.display()
    )
}

fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_prefix(target: &Path, what: &str) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dump".into());
    format!(".{name}.{what}-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::manifest::SourceKind;

    fn record(n: &str) -> TensorRecord {
        TensorRecord {
            native: n.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dropped_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.st");
        let mut w =
            DumpWriter::create(&target, Manifest::for_this_process(SourceKind::Other)).unwrap();
        w.write("a", record("a"), Dtype::F32, &[2], &[0u8; 8])
            .unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn rejects_duplicates_and_wrong_byte_counts() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.st");
        let mut w =
            DumpWriter::create(&target, Manifest::for_this_process(SourceKind::Other)).unwrap();
        w.write("a", record("a"), Dtype::F32, &[2], &[0u8; 8])
            .unwrap();
        let dup = w.write("a", record("a"), Dtype::F32, &[2], &[0u8; 8]);
        assert!(dup.unwrap_err().to_string().contains("written twice"));
        let huge = w.write("c", record("c"), Dtype::F32, &[usize::MAX, 2], &[]);
        assert!(huge.unwrap_err().to_string().contains("more bytes than"));
        let short = w.write("b", record("b"), Dtype::F16, &[3], &[0u8; 4]);
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("tensor \"b\": F16 [3] needs 6 bytes, got 4")
        );
    }

    #[test]
    fn header_is_padded_to_eight_bytes() {
        let m = Manifest::for_this_process(SourceKind::Other);
        let h = header_bytes(
            &m,
            vec![(
                "t".into(),
                TensorInfo {
                    dtype: Dtype::U8,
                    shape: vec![3],
                    data_offsets: (0, 3),
                },
            )],
        )
        .unwrap();
        assert_eq!(h.len() % 8, 0);
        assert!(serde_json::from_slice::<serde_json::Value>(&h).is_ok());
    }
}
