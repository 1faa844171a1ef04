//! The import of a recording (`.npz`) into a dump: the contract is in [`super`].

use super::names::canonical_stage;
use crate::dump::{DumpWriter, FileIdentity, Manifest, SourceKind, TensorRecord, WrittenDump};
use crate::model::stage::Dim;
use crate::model::{Architecture, Ffn, Stage};
use anyhow::{Context, Result, bail, ensure};
use npyz::{DType, TypeChar};
use safetensors::Dtype;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub const MANIFEST_ARRAY: &str = "__dinodiff_manifest__";
pub const FORMAT: &str = "dinodiff-eqx-npz";

pub struct EqxOptions {
    pub npz: PathBuf,
    pub output: PathBuf,
    /// When given, the recording must have been made on this dump's `input`.
    pub input: Option<PathBuf>,
}

pub struct EqxImport {
    pub written: WrittenDump,
    pub recognized: usize,
    pub derived: Vec<String>,
}

/// One array read from the npz.
struct Array {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The rank a canonical stage has with its batch dimension, `None` for the unbatched ones.
fn batched_rank(stage: Stage) -> Option<usize> {
    let dims = stage.dims();
    (dims.first() == Some(&Dim::Batch)).then_some(dims.len())
}

fn read_manifest(
    archive: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    path: &Path,
) -> Result<Value> {
    check_entry_header(archive, MANIFEST_ARRAY, path)?;
    let Some(file) = archive
        .by_name(MANIFEST_ARRAY)
        .with_context(|| format!("reading {MANIFEST_ARRAY} in {}", path.display()))?
    else {
        bail!(
            "{} has no {MANIFEST_ARRAY} array: it was not written by tools/eqx_capture.py \
             (record the run with `python tools/eqx_capture.py --model M.eqx --input input.st -o {}`)",
            path.display(),
            path.display()
        );
    };
    let bytes: Vec<u8> = file
        .into_vec()
        .with_context(|| format!("{}: {MANIFEST_ARRAY} is not a uint8 array", path.display()))?;
    let manifest: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: {MANIFEST_ARRAY} is not JSON", path.display()))?;
    ensure!(
        manifest["format"] == FORMAT && manifest["version"] == 1,
        "{}: {MANIFEST_ARRAY} is format {} version {}; this dinodiff reads {FORMAT} version 1",
        path.display(),
        manifest["format"],
        manifest["version"]
    );
    Ok(manifest)
}

/// Refuses an array whose `.npy` header npyz must not parse ([`super::npy::check_header`]);
/// an array the zip does not hold is left for the caller to say so.
fn check_entry_header(archive: &mut Archive, name: &str, npz: &Path) -> Result<()> {
    let file_name = npyz::npz::file_name_from_array_name(name);
    let Ok(entry) = archive.zip_archive().by_name(&file_name) else {
        return Ok(());
    };
    super::npy::check_header(entry).map_err(|e| {
        anyhow::anyhow!(
            "{}: array {name:?} {e}; the file is damaged or was not written by numpy",
            npz.display()
        )
    })
}

/// Reads one array; `claimed` is the manifest's dtype name for it (decides 2-byte voids);
/// `entry_size` is the uncompressed size of its zip entry, which bounds what the header may
/// claim (so a damaged header cannot make dinodiff allocate more than the file holds).
fn read_array<R: std::io::Read>(
    file: npyz::NpyFile<R>,
    npz: &Path,
    name: &str,
    claimed: Option<&str>,
    entry_size: u64,
) -> Result<Array> {
    let refuse = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{}: array {name:?} {what}; dinodiff imports f16, bf16, f32, f64, integer and bool arrays",
            npz.display()
        )
    };
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if file.header().uses_pickled_array() {
        return Err(refuse(
            "is an object array (pickled Python objects), which dinodiff never unpickles".into(),
        ));
    }
    let DType::Plain(ts) = file.dtype() else {
        return Err(refuse(format!(
            "has a structured dtype ({})",
            file.dtype().descr()
        )));
    };
    if file.order() == npyz::Order::Fortran && shape.len() > 1 {
        return Err(refuse(
            "is stored in Fortran order; save it with np.ascontiguousarray".into(),
        ));
    }
    let size = ts.size_field();
    let data_bytes = file.shape().iter().try_fold(size, |n, &d| n.checked_mul(d));
    if data_bytes.is_none_or(|b| b > entry_size) {
        bail!(
            "{}: array {name:?} claims shape {:?} of {size}-byte elements, more data than its zip \
             entry holds ({entry_size} bytes): the file is damaged or cut short; record the run again",
            npz.display(),
            file.shape()
        );
    }
    macro_rules! typed {
        ($t:ty, $dtype:expr) => {{
            let v: Vec<$t> = file
                .into_vec()
                .with_context(|| format!("{}: reading array {name:?}", npz.display()))?;
            ($dtype, bytemuck::cast_slice(&v).to_vec())
        }};
    }
    let (dtype, bytes) = match (ts.type_char(), size) {
        (TypeChar::Float, 2) => typed!(half::f16, Dtype::F16),
        (TypeChar::Float, 4) => typed!(f32, Dtype::F32),
        (TypeChar::Float, 8) => typed!(f64, Dtype::F64),
        (TypeChar::Int, 1) => typed!(i8, Dtype::I8),
        (TypeChar::Int, 2) => typed!(i16, Dtype::I16),
        (TypeChar::Int, 4) => typed!(i32, Dtype::I32),
        (TypeChar::Int, 8) => typed!(i64, Dtype::I64),
        (TypeChar::Uint, 1) => typed!(u8, Dtype::U8),
        (TypeChar::Uint, 2) => typed!(u16, Dtype::U16),
        (TypeChar::Uint, 4) => typed!(u32, Dtype::U32),
        (TypeChar::Uint, 8) => typed!(u64, Dtype::U64),
        (TypeChar::Bool, 1) => {
            let v: Vec<bool> = file
                .into_vec()
                .with_context(|| format!("{}: reading array {name:?}", npz.display()))?;
            (Dtype::BOOL, v.into_iter().map(u8::from).collect())
        }
        (TypeChar::RawData, 2) if claimed == Some("bfloat16") => {
            let little = ts.endianness() != npyz::Endianness::Big;
            let v: Vec<[u8; 2]> = {
                let expected = data_bytes.unwrap_or(0);
                // Grown as the bytes arrive, never reserved from the claims: a zip entry can
                // claim any size (up to 2^64 with zip64) that its compressed data does not hold.
                let mut raw = Vec::new();
                let mut data = std::io::Read::take(file.into_inner(), expected);
                std::io::Read::read_to_end(&mut data, &mut raw)
                    .with_context(|| format!("{}: reading array {name:?}", npz.display()))?;
                let expected = expected as usize;
                ensure!(
                    raw.len() >= expected,
                    "{}: array {name:?} is cut short ({} of {expected} bytes); record the run \
                     again with tools/eqx_capture.py",
                    npz.display(),
                    raw.len(),
                );
                raw[..expected]
                    .chunks_exact(2)
                    .map(|c| if little { [c[0], c[1]] } else { [c[1], c[0]] })
                    .collect()
            };
            (Dtype::BF16, v.concat())
        }
        (TypeChar::RawData, 2) => {
            return Err(refuse(
                "is a 2-byte void array not declared bfloat16 in the manifest".into(),
            ));
        }
        _ => return Err(refuse(format!("has dtype {ts}, which a dump cannot hold"))),
    };
    Ok(Array {
        dtype,
        shape,
        bytes,
    })
}

type Archive = npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>;

/// An opened recording whose listing has been checked against its manifest.
struct Recording {
    identity: FileIdentity,
    archive: Archive,
    /// The recorder's manifest.
    recorded: Value,
    /// The arrays, in execution order.
    order: Vec<String>,
}

pub fn import(opts: &EqxOptions) -> Result<EqxImport> {
    let npz = &opts.npz;
    let Recording {
        identity,
        mut archive,
        recorded,
        order,
    } = open_recording(npz)?;
    let claimed: BTreeMap<String, String> = recorded["arrays"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v["dtype"].as_str().map(|d| (k.clone(), d.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let manifest = eqx_manifest(&recorded);
    let mut writer = DumpWriter::create_for(&opts.output, manifest, order.len() + 4)?;
    // Canonical stage -> shape written (the head derivation reads the patch count from it).
    let mut written_stages: HashMap<Stage, Vec<usize>> = HashMap::new();
    let mut norm: Option<Array> = None;
    for name in &order {
        let entry_size = archive
            .zip_archive()
            .by_name(&npyz::npz::file_name_from_array_name(name))
            .map(|entry| entry.size())
            .with_context(|| format!("reading array {name:?} in {}", npz.display()))?;
        check_entry_header(&mut archive, name, npz)?;
        let file = archive
            .by_name(name)
            .with_context(|| format!("reading array {name:?} in {}", npz.display()))?
            .expect("presence checked when the recording was opened");
        let claim = claimed.get(name).map(String::as_str);
        let mut array = read_array(file, npz, name, claim, entry_size)?;
        if name == "input" {
            check_input_array(&array, &recorded, opts)?;
        }
        let stage = write_array(&mut writer, name, &mut array, &recorded)?;
        if let Some(s) = stage {
            written_stages.insert(s, array.shape.clone());
        }
        if stage == Some(Stage::NORM) {
            norm = Some(array);
        }
    }
    let derived: Vec<String> = match &norm {
        Some(norm) => crate::capture::head::write_derived(
            &mut writer,
            (&norm.shape, &norm.bytes, norm.dtype),
            &written_stages,
        )?
        .into_iter()
        .map(|s| s.to_string())
        .collect(),
        None => Vec::new(),
    };
    let mut about = recorded.clone();
    if let Some(o) = about.as_object_mut() {
        o.remove("order");
        o.remove("arrays");
    }
    writer.annotate(
        "eqx",
        json!({ "npz": identity, "recorded": about, "derived": derived }),
    );
    let written = writer.finish()?;
    Ok(EqxImport {
        written,
        recognized: written_stages.len(),
        derived,
    })
}

/// Opens the npz, reads its manifest and checks that it lists exactly the arrays it holds,
/// `input` among them.
fn open_recording(npz: &Path) -> Result<Recording> {
    let identity = FileIdentity::of_file(npz, |_| {}).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the npz {}: {}",
            npz.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let mut archive = npyz::npz::NpzArchive::open(npz).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an npz file (a zip of .npy arrays): {e}; pass the recording that \
             tools/eqx_capture.py wrote",
            npz.display()
        )
    })?;
    let recorded = read_manifest(&mut archive, npz)?;
    let order: Vec<String> = recorded["order"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        !order.is_empty(),
        "{}: the manifest lists no arrays (\"order\" is missing or empty)",
        npz.display()
    );
    let present: HashSet<String> = archive.array_names().map(str::to_string).collect();
    check_listing(npz, &order, &present)?;
    Ok(Recording {
        identity,
        archive,
        recorded,
        order,
    })
}

fn check_listing(npz: &Path, order: &[String], present: &HashSet<String>) -> Result<()> {
    let joined = |names: &[&String]| {
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<&String> = order.iter().filter(|n| !present.contains(*n)).collect();
    if !missing.is_empty() {
        bail!(
            "{}: the manifest lists {} array(s) the npz does not hold: {}. The recording is \
             incomplete; record it again with tools/eqx_capture.py",
            npz.display(),
            missing.len(),
            joined(&missing)
        );
    }
    let listed: HashSet<&str> = order.iter().map(String::as_str).collect();
    let mut unlisted: Vec<&String> = present
        .iter()
        .filter(|n| *n != MANIFEST_ARRAY && !listed.contains(n.as_str()))
        .collect();
    unlisted.sort();
    if !unlisted.is_empty() {
        bail!(
            "{}: the npz holds array(s) its manifest does not list: {}; it was changed after \
             tools/eqx_capture.py wrote it",
            npz.display(),
            joined(&unlisted)
        );
    }
    ensure!(
        listed.contains("input"),
        "{}: the recording holds no \"input\" array, so what it was run on cannot be checked",
        npz.display()
    );
    Ok(())
}

/// The dump's manifest from the recorder's: model identity, frameworks, device, dtype, input,
/// and the hub variant the Equinox config's dimensions are (else `custom`).
fn eqx_manifest(recorded: &Value) -> Manifest {
    let mut manifest = Manifest::for_this_process(SourceKind::Eqx);
    if let Some(m) = recorded.get("model")
        && let (Some(path), Some(size), Some(sha)) =
            (m["path"].as_str(), m["size"].as_u64(), m["sha256"].as_str())
    {
        manifest.model = Some(FileIdentity {
            path: path.to_string(),
            size,
            sha256: sha.to_string(),
        });
    }
    if let Some(fw) = recorded["frameworks"].as_object() {
        for (k, v) in fw {
            if let Some(v) = v.as_str() {
                manifest.frameworks.insert(k.clone(), v.to_string());
            }
        }
    }
    manifest.device = recorded["device"].as_str().map(str::to_string);
    manifest.dtype = recorded["dtype"].as_str().map(str::to_string);
    manifest.input = recorded.get("input").cloned();
    let config = &recorded["model"]["config"];
    if let (Some(d), Some(depth), Some(heads)) = (
        config["embed_dim"].as_u64(),
        config["depth"].as_u64(),
        config["num_heads"].as_u64(),
    ) {
        // The Equinox example has the GELU Mlp only: the hub variant with these dimensions.
        let hub = crate::model::variant::VARIANTS.iter().find(|v| {
            let Architecture {
                embed_dim,
                depth: blocks,
                heads: h,
                ffn,
                ..
            } = v.arch;
            ffn == Ffn::Mlp
                && (embed_dim, blocks, h) == (d as usize, depth as usize, heads as usize)
        });
        manifest.variant = Some(hub.map_or("custom".into(), |v| v.name.to_string()));
    }
    if crate::capture::equimo::is_equimo(recorded) {
        manifest.variant = crate::capture::equimo::variant(recorded);
    }
    manifest
}

/// The recorded `input` array must hash to what the recorder's manifest says and, with
/// `--input`, to that dump's input.
fn check_input_array(array: &Array, recorded: &Value, opts: &EqxOptions) -> Result<()> {
    let npz = &opts.npz;
    let hash = crate::dump::manifest::sha256_hex(&array.bytes);
    if let Some(r) = recorded["input"]["sha256"].as_str() {
        ensure!(
            r == hash,
            "{}: its \"input\" array hashes to {hash}, not to the input sha256 {r} its \
             manifest records; the file was changed after it was written",
            npz.display()
        );
    }
    if let Some(dump) = &opts.input {
        let expected = crate::capture::input::read_input_dump(dump)?;
        let want = &expected.sha256;
        ensure!(
            *want == hash,
            "{} was recorded for a different input: its input has sha256 {hash} (shape \
             {:?}), {} has {want} (shape {:?}). Record the Equinox run again on {}",
            npz.display(),
            array.shape,
            dump.display(),
            expected.shape,
            dump.display()
        );
    }
    Ok(())
}

/// Writes one array under its canonical stage name (batch dimension added when it lacks one)
/// or its Equinox name; returns the stage.
fn write_array(
    writer: &mut DumpWriter,
    name: &str,
    array: &mut Array,
    recorded: &Value,
) -> Result<Option<Stage>> {
    let mut extra = serde_json::Map::new();
    if let Some(info) = recorded["arrays"].get(name).and_then(Value::as_object) {
        for key in ["module", "class", "kind"] {
            if let Some(v) = info.get(key) {
                extra.insert(format!("eqx_{key}"), v.clone());
            }
        }
    }
    let stage = if crate::capture::equimo::is_equimo(recorded) {
        crate::capture::equimo::canonical_stage(name)
    } else {
        canonical_stage(name)
    };
    let dump_name = match stage {
        Some(s) => {
            if let Some(rank) = batched_rank(s)
                && array.shape.len() + 1 == rank
            {
                extra.insert("eqx_shape".into(), json!(array.shape));
                array.shape.insert(0, 1);
            }
            let canonical = s.to_string();
            if canonical != name {
                extra.insert("eqx_name".into(), Value::String(name.to_string()));
            }
            canonical
        }
        None => name.to_string(),
    };
    writer.write(
        &dump_name,
        TensorRecord {
            native: name.to_string(),
            stage: stage.map(|s| s.to_string()),
            extra,
        },
        array.dtype,
        &array.shape,
        &array.bytes,
    )?;
    Ok(stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_dims_are_known_per_stage() {
        let rank = |name: &str| batched_rank(name.parse().unwrap());
        assert_eq!(rank("blocks.2.attn.q"), Some(4));
        assert_eq!(rank("blocks.2.attn"), Some(3));
        assert_eq!(rank("cls"), Some(2));
        assert_eq!(rank("rope.sin"), None);
        assert_eq!(rank("input"), Some(4));
    }
}
