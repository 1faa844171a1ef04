//! The manifest: the provenance a dump carries in its safetensors `__metadata__`.
//!
//! Contract (see `docs/dump-format.md`):
//! - the manifest is one JSON object stored as the string value of the `__metadata__` key
//!   [`MANIFEST_KEY`]; [`FORMAT_VERSION_KEY`] holds the format version as a string so that a stock
//!   reader can tell the version without parsing JSON;
//! - `order` lists every tensor of the dump exactly once, in execution order;
//! - `tensors` has one [`TensorRecord`] per tensor: its native name in the source framework and its
//!   canonical stage name when known (then the tensor is also *named* by that stage);
//! - unknown fields are kept (`extra`) so newer writers stay readable.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// `__metadata__` key holding the manifest JSON.
pub const MANIFEST_KEY: &str = "dinodiff.manifest";
/// `__metadata__` key holding the format version (a decimal string).
pub const FORMAT_VERSION_KEY: &str = "dinodiff.format_version";
/// The version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Which kind of program produced the tensors.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Meta's DINOv3 reference forward (libtorch).
    Meta,
    /// An ONNX Runtime run.
    Onnx,
    /// An Equinox / JAX run.
    Eqx,
    /// `dinodiff prep`: the prepared input only.
    Input,
    /// Anything else: synthetic dumps, plain safetensors files.
    #[default]
    Other,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            SourceKind::Meta => "meta",
            SourceKind::Onnx => "onnx",
            SourceKind::Eqx => "eqx",
            SourceKind::Input => "input",
            SourceKind::Other => "other",
        };
        f.write_str(s)
    }
}

/// Identity of a file the run depended on (checkpoint, ONNX model, image).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// The path as the user gave it.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl FileIdentity {
    /// The identity of a file's contents, already read into memory (so that the hash describes
    /// exactly the bytes that were used).
    /// The identity of a file read from disk in chunks (multi-GB checkpoints are never held in
    /// memory for hashing). Progress is reported to `on_bytes` as the file is read.
    pub fn of_file(path: &Path, mut on_bytes: impl FnMut(u64)) -> std::io::Result<FileIdentity> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            on_bytes(n as u64);
        }
        Ok(FileIdentity {
            path: path.display().to_string(),
            size,
            sha256: hex(&hasher.finalize()),
        })
    }

    pub fn of_bytes(path: &Path, bytes: &[u8]) -> FileIdentity {
        FileIdentity {
            path: path.display().to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

/// Per-tensor provenance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TensorRecord {
    /// The tensor's name in the framework that produced it (module path, ONNX value name, ...).
    pub native: String,
    /// Canonical stage name (`docs/stages.md`) when the backend recognized one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Backend-specific facts (ONNX op type, call path, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TensorRecord {
    /// The record of a canonical stage: its name, and the framework's name for the tensor.
    pub fn of_stage(stage: crate::model::Stage, native: impl Into<String>) -> TensorRecord {
        TensorRecord {
            native: native.into(),
            stage: Some(stage.to_string()),
            extra: Map::new(),
        }
    }
}

/// The whole manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub source: SourceKind,
    pub dinodiff_version: String,
    pub command_line: Vec<String>,
    #[serde(default)]
    pub model: Option<FileIdentity>,
    #[serde(default)]
    pub variant: Option<String>,
    /// Framework name -> version (`torch`, `onnxruntime`, `jax`, ...).
    #[serde(default)]
    pub frameworks: BTreeMap<String, String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    /// RFC 3339 creation time (UTC).
    pub created: String,
    pub host: String,
    /// sha256 (hex) of the raw little-endian bytes of the `input` tensor fed to the model.
    #[serde(default)]
    pub input_sha256: Option<String>,
    /// How the input was made (`prep`'s transform, the source image's identity, ...).
    #[serde(default)]
    pub input: Option<Value>,
    /// Tensor names in execution order.
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub tensors: BTreeMap<String, TensorRecord>,
    /// Fields of newer writers (or backend-wide facts), preserved verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// A manifest for a run of this process: version, command line, time and host filled in.
    pub fn for_this_process(source: SourceKind) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            source,
            dinodiff_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line: std::env::args().collect(),
            model: None,
            variant: None,
            frameworks: BTreeMap::new(),
            device: None,
            dtype: None,
            created: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            input_sha256: None,
            input: None,
            order: Vec::new(),
            tensors: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// The manifest a reader assumes for a safetensors file that has none: source `other`,
    /// execution order = `names` as given ([`super::reader::implied_order`]), native names =
    /// tensor names.
    pub fn implied(names_in_data_order: &[String]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            source: SourceKind::Other,
            dinodiff_version: String::new(),
            command_line: Vec::new(),
            model: None,
            variant: None,
            frameworks: BTreeMap::new(),
            device: None,
            dtype: None,
            created: String::new(),
            host: String::new(),
            input_sha256: None,
            input: None,
            order: names_in_data_order.to_vec(),
            tensors: names_in_data_order
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        TensorRecord {
                            native: n.clone(),
                            ..TensorRecord::default()
                        },
                    )
                })
                .collect(),
            extra: Map::new(),
        }
    }
}

/// Names of the tensors that hold a headline stage as the *deployed* session computes it
/// (`deployed/cls`, `deployed/pooled`: an ONNX model run unmarked at ONNX Runtime's default
/// optimizations), beside the stage captured at graph semantics. `diff` takes a dump's headline
/// from them when present.
/// The prefix of the deployed run's model outputs in an ONNX capture (`unmarked/<output>`).
pub const UNMARKED_PREFIX: &str = "unmarked/";
pub const DEPLOYED_PREFIX: &str = "deployed/";

/// The name of the deployed form of `stage` ([`DEPLOYED_PREFIX`]).
pub fn deployed_name(stage: &str) -> String {
    format!("{DEPLOYED_PREFIX}{stage}")
}

/// What ONNX Runtime's graph optimizations change in a model's outputs: the deployed run
/// (unmarked, at `deployed_opt_level`) against the unmarked run at the marked runs' level
/// (`graph_opt_level`, the graph as exported). Stored as the manifest's
/// `onnx.optimizer_effect`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OptimizerEffect {
    pub deployed_opt_level: String,
    pub graph_opt_level: String,
    /// The largest max|Δ| over the outputs (0 when all are bit-identical).
    pub max_abs: f64,
    /// Whether some output differs beyond the default tolerance (`atol` = `rtol` = 1e-4).
    pub over_tolerance: bool,
    pub outputs: Vec<OutputEffect>,
}

/// One model output's part of [`OptimizerEffect`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutputEffect {
    pub name: String,
    /// `None` when the two runs' outputs differ in shape or dtype (not comparable).
    pub max_abs: Option<f64>,
    pub cosine: Option<f64>,
    /// Elements over the default tolerance.
    pub over_tolerance: u64,
}

impl Manifest {
    /// The ONNX capture's optimizer effect (`onnx.optimizer_effect`), when recorded.
    pub fn optimizer_effect(&self) -> Option<OptimizerEffect> {
        let value = self.extra.get("onnx")?.get("optimizer_effect")?;
        serde_json::from_value(value.clone()).ok()
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// sha256 (hex) of a tensor's raw bytes: the `input_sha256` of the manifest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_json_keeping_unknown_fields() {
        let mut m = Manifest::for_this_process(SourceKind::Onnx);
        m.order = vec!["a".into()];
        m.tensors.insert(
            "a".into(),
            TensorRecord {
                native: "v_3".into(),
                stage: None,
                extra: [("op_type".to_string(), Value::from("Add"))]
                    .into_iter()
                    .collect(),
            },
        );
        let mut json: Value = serde_json::to_value(&m).unwrap();
        json["from_the_future"] = Value::from(7);
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back.tensors["a"].extra["op_type"], "Add");
        assert_eq!(back.extra["from_the_future"], 7);
        assert_eq!(back.source, SourceKind::Onnx);
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
