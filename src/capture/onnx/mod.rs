//! `dinodiff capture onnx`: every intermediate value of an ONNX Runtime run, values inside local
//! functions included, into a dump.
//!
//! Contract (this stage of the backend):
//! - the model is decoded ([`crate::onnx::proto`]), its local functions inlined
//!   ([`crate::onnx::inline`]) and every value a node produces (or those `--only` keeps) is added
//!   as a graph output; the rewritten model is written beside the original (a hidden temporary
//!   file, removed afterwards) so that its external data files resolve, or, when that directory
//!   is read-only, into a temporary directory holding hard links (or copies) of them;
//! - the original model is also run unmarked, with the same options; its outputs are stored as
//!   `unmarked/<output>` and the manifest says whether the marked run's final outputs are
//!   bit-identical to them (the observer-effect report);
//! - values recognized as canonical stages ([`crate::onnx::stages`]) are named by their stage
//!   (the ONNX name goes to the record's `onnx_value`); the others by call path
//!   (`VisionTransformer_1/Block_3/LayerScale_1/v_3`; main-graph values keep their names) and written in graph (topological) order after `input`; each record
//!   carries the native name, producing node, op type, call path and the node's metadata_props.

pub mod runtime;

use super::StageFilter;
use super::input::InputSource;
use crate::dump::{DumpWriter, FileIdentity, Manifest, SourceKind, TensorRecord, WrittenDump};
use crate::onnx::inline::{Inlined, ValueOrigin, inline_local_functions};
use crate::onnx::proto::{ModelProto, TensorHead, ValueInfoProto};
use anyhow::{Context, Result, bail};
use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::Tensor;
use prost::Message;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl OptLevel {
    fn ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::Level3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OptLevel::Disable => "disable",
            OptLevel::Basic => "basic",
            OptLevel::Extended => "extended",
            OptLevel::All => "all",
        }
    }
}

pub struct OnnxOptions {
    pub model: PathBuf,
    pub input: InputSource,
    pub output: PathBuf,
    pub only: StageFilter,
    pub opt_level: OptLevel,
    pub threads: Option<usize>,
    pub ort_lib: Option<PathBuf>,
}

pub struct OnnxCapture {
    pub written: WrittenDump,
    pub values: usize,
    pub calls_inlined: usize,
    pub observer_effect: bool,
    pub runtime: PathBuf,
    pub run: Duration,
}

fn ort_err<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// Decodes the model file; errors say what the file is not.
fn read_model(path: &Path) -> Result<(Vec<u8>, ModelProto)> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the ONNX model {}: {}",
            path.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let model = match ModelProto::decode(bytes.as_slice()) {
        Ok(m) if m.graph.is_some() && m.ir_version.is_some() => m,
        Ok(_) | Err(_) => bail!(
            "{} is not an ONNX model: it does not decode as a ModelProto with a graph ({} bytes). \
             Was it cut short, or is it another format?",
            path.display(),
            bytes.len()
        ),
    };
    Ok((bytes, model))
}

/// Where the marked copy of the model lives while it runs (removed on drop).
enum MarkedFile {
    Beside(tempfile::NamedTempFile),
    /// The directory is kept (and removed on drop) with the model path inside it.
    Apart(#[allow(dead_code)] tempfile::TempDir, PathBuf),
}

impl MarkedFile {
    fn path(&self) -> &Path {
        match self {
            MarkedFile::Beside(f) => f.path(),
            MarkedFile::Apart(_, p) => p,
        }
    }
}

fn write_marked(
    model: &Path,
    model_dir: &Path,
    externals: &BTreeSet<String>,
    bytes: &[u8],
) -> Result<MarkedFile> {
    use std::io::Write;
    let stem = model
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    if let Ok(mut f) = tempfile::Builder::new()
        .prefix(&format!(".{stem}.marked-"))
        .suffix(".onnx")
        .tempfile_in(model_dir)
        && f.write_all(bytes).and_then(|_| f.flush()).is_ok()
    {
        return Ok(MarkedFile::Beside(f));
    }
    let dir = tempfile::tempdir().context("creating a temporary directory for the marked model")?;
    for loc in externals {
        let from = model_dir.join(loc);
        let to = dir.path().join(loc);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    let path = dir.path().join(format!("{stem}.marked.onnx"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(MarkedFile::Apart(dir, path))
}

/// Relative locations of the external data files the model's initializers name.
fn external_files(model: &ModelProto) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    if let Some(g) = &model.graph {
        for t in &g.initializer {
            if let Some(loc) = TensorHead::parse(t)
                .ok()
                .and_then(|h| h.external_location().map(str::to_string))
            {
                files.insert(loc);
            }
        }
    }
    files
}

fn session(
    env: &ort::environment::Environment,
    opts: &OnnxOptions,
    path: &Path,
) -> Result<Session> {
    let what = || format!("ONNX Runtime cannot load {}", path.display());
    let mut b = Session::builder(env).map_err(ort_err(what()))?;
    b = b
        .with_optimization_level(opts.opt_level.ort())
        .map_err(ort_err(what()))?;
    if let Some(n) = opts.threads {
        b = b.with_intra_threads(n).map_err(ort_err(what()))?;
    }
    b.commit_from_file(path).map_err(|e| {
        let text = e.to_string();
        let ir = regex::Regex::new(
            r"Unsupported model IR version: (\d+), max supported IR version: (\d+)",
        )
        .expect("valid regex");
        match ir.captures(&text) {
            Some(c) => anyhow::anyhow!(
                "{} has ONNX IR version {}, but this ONNX Runtime accepts IR versions up to {}. \
                 Re-export it with an older IR version (with the onnx package: set \
                 model.ir_version = {} and save, if its opsets allow), or install a newer \
                 onnxruntime and pass its library with --ort-lib",
                opts.model.display(),
                &c[1],
                &c[2],
                &c[2]
            ),
            None => anyhow::anyhow!("{}: {text}", what()),
        }
    })
}

pub fn capture(opts: &OnnxOptions) -> Result<OnnxCapture> {
    let (bytes, model) = read_model(&opts.model)?;
    let identity = FileIdentity::of_bytes(&opts.model, &bytes);
    drop(bytes);
    let model_dir = opts
        .model
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let externals = external_files(&model);
    for loc in &externals {
        if !model_dir.join(loc).is_file() {
            bail!(
                "the model {} keeps initializers in the external file {loc}, which is not beside it \
                 ({} does not exist); copy it next to the model",
                opts.model.display(),
                model_dir.join(loc).display()
            );
        }
    }
    let input = opts.input.load()?;
    let (env, runtime) = runtime::load(opts.ort_lib.as_deref())?;

    // The unmarked run: the model as it is.
    let mut plain = session(&env, opts, &opts.model)?;
    let graph_inputs: Vec<String> = plain
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    if graph_inputs.len() != 1 {
        bail!(
            "{} has {} inputs ({}); capture onnx feeds one image tensor",
            opts.model.display(),
            graph_inputs.len(),
            graph_inputs.join(", ")
        );
    }
    let input_name = graph_inputs[0].clone();
    let want_shape: Vec<i64> = match plain.inputs()[0].dtype() {
        ort::value::ValueType::Tensor { shape, .. } => shape.iter().copied().collect(),
        _ => Vec::new(),
    };
    let have: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
    if want_shape.len() != have.len()
        || want_shape.iter().zip(&have).any(|(w, h)| *w >= 0 && w != h)
    {
        bail!(
            "{} takes input {input_name:?} of shape {want_shape:?} (-1 = any), but the input is \
             {have:?}; prepare it with `dinodiff prep --size {}`",
            opts.model.display(),
            want_shape.last().copied().filter(|&s| s > 0).unwrap_or(224)
        );
    }
    let feed = || -> Result<Tensor<f32>> {
        Tensor::from_array((input.shape.to_vec(), input.data.clone().into_boxed_slice()))
            .map_err(ort_err("building the input tensor".into()))
    };
    let final_outputs: Vec<String> = plain
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let unmarked: Vec<(String, runtime::Extracted)> = {
        let out = plain
            .run(ort::inputs![input_name.as_str() => feed()?])
            .map_err(ort_err(format!("running {}", opts.model.display())))?;
        final_outputs
            .iter()
            .map(|n| Ok((n.clone(), runtime::extract(n, &out[n.as_str()])?)))
            .collect::<Result<_>>()?
    };
    drop(plain);

    // The marked run: functions inlined, every value an output.
    let Inlined {
        mut model,
        values,
        calls,
        calls_inlined,
        subgraph_values,
    } = inline_local_functions(model)?;
    let stages = crate::onnx::stages::recognize(&values, &calls);
    let finals: BTreeSet<&str> = final_outputs.iter().map(String::as_str).collect();
    let marked: Vec<&ValueOrigin> = values
        .iter()
        .filter(|v| {
            opts.only.keeps(&v.name)
                || stages
                    .get(&v.name)
                    .is_some_and(|r| opts.only.keeps(&r.stage))
                || finals.contains(v.name.as_str())
        })
        .collect();
    {
        let graph = model.graph.as_mut().expect("inlined models have a graph");
        let existing: BTreeSet<String> =
            graph.output.iter().filter_map(|o| o.name.clone()).collect();
        for v in &marked {
            if !existing.contains(&v.name) {
                graph.output.push(ValueInfoProto {
                    name: Some(v.name.clone()),
                    ..Default::default()
                });
            }
        }
    }
    // ONNX Runtime resolves external data relative to the model and refuses paths that escape
    // its directory (symlinks included), so the marked copy is written beside the model when
    // that directory is writable, else into a temporary directory with the data files hard-linked
    // (or copied, across file systems).
    let marked_bytes = model.encode_to_vec();
    drop(model);
    let marked_file = write_marked(&opts.model, &model_dir, &externals, &marked_bytes)?;
    drop(marked_bytes);
    let marked_path = marked_file.path().to_path_buf();
    let mut session_marked = session(&env, opts, &marked_path)?;

    let mut manifest = Manifest::for_this_process(SourceKind::Onnx);
    manifest.model = Some(identity);
    manifest.frameworks.insert(
        "onnxruntime".into(),
        format!("API {} ({})", ort::MINOR_VERSION, runtime.display()),
    );
    manifest.device = Some("cpu".into());
    manifest.input = Some(input.provenance.clone());
    let mut writer =
        DumpWriter::create_for(&opts.output, manifest, marked.len() + unmarked.len() + 1)?;
    writer.write(
        "input",
        TensorRecord {
            native: input_name.clone(),
            stage: Some("input".into()),
            ..Default::default()
        },
        safetensors::Dtype::F32,
        &input.shape,
        &input.bytes(),
    )?;
    let started = Instant::now();
    let out = session_marked
        .run(ort::inputs![input_name.as_str() => feed()?])
        .map_err(ort_err(format!(
            "running the marked copy of {}",
            opts.model.display()
        )))?;
    let run = started.elapsed();
    let mut observer_effect = false;
    for v in &marked {
        let Some(value) = out.get(v.name.as_str()) else {
            bail!(
                "ONNX Runtime returned no value {} although it was marked",
                v.name
            );
        };
        let e = runtime::extract(&v.name, value)?;
        if let Some((_, u)) = unmarked.iter().find(|(n, _)| *n == v.name) {
            observer_effect |= u.bytes != e.bytes || u.shape != e.shape;
        }
        let mut extra = serde_json::Map::new();
        extra.insert("node".into(), Value::String(v.node.clone()));
        extra.insert("op_type".into(), Value::String(v.op_type.clone()));
        extra.insert("call_path".into(), Value::String(v.call_path_string()));
        extra.insert("functions".into(), json!(v.functions));
        if !v.returned_by.is_empty() {
            extra.insert(
                "returned_by".into(),
                json!(
                    v.returned_by
                        .iter()
                        .map(|(p, f)| json!({"call": p, "function": f}))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if !v.metadata.is_empty() {
            extra.insert(
                "metadata_props".into(),
                Value::Object(
                    v.metadata
                        .iter()
                        .map(|(k, x)| (k.clone(), Value::String(x.clone())))
                        .collect(),
                ),
            );
        }
        let (name, shape, stage) = match stages.get(&v.name) {
            Some(r) => {
                extra.insert("onnx_value".into(), Value::String(v.name.clone()));
                extra.insert("stage_rule".into(), Value::String(r.rule.into()));
                let shape = crate::onnx::stages::reshaped(&e.shape, r.reshape);
                if shape != e.shape {
                    extra.insert("onnx_shape".into(), json!(e.shape));
                }
                (r.stage.clone(), shape, Some(r.stage.clone()))
            }
            None => (v.name.clone(), e.shape.clone(), None),
        };
        writer.write(
            &name,
            TensorRecord {
                native: v.native.clone(),
                stage,
                extra,
            },
            e.dtype,
            &shape,
            &e.bytes,
        )?;
    }
    for (name, u) in &unmarked {
        writer.write(
            &format!("unmarked/{name}"),
            TensorRecord {
                native: name.clone(),
                stage: None,
                extra: [("run".to_string(), Value::String("unmarked".into()))]
                    .into_iter()
                    .collect(),
            },
            u.dtype,
            &u.shape,
            &u.bytes,
        )?;
    }
    writer.annotate(
        "onnx",
        json!({
            "opt_level": opts.opt_level.name(),
            "threads": opts.threads,
            "calls_inlined": calls_inlined,
            "values_marked": marked.len(),
            "values_in_subgraphs_not_captured": subgraph_values,
            "observer_effect": {
                "final_outputs": final_outputs,
                "bit_identical": !observer_effect,
            },
        }),
    );
    let written = writer.finish()?;
    Ok(OnnxCapture {
        written,
        values: marked.len(),
        calls_inlined,
        observer_effect,
        runtime,
        run,
    })
}
