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
//! - values recognized as canonical stages ([`rules`]) are named by their stage (shapes and
//!   assembled stages: [`assemble`]; the ONNX name goes to the record's `onnx_value`); the others by call path
//!   (`VisionTransformer_1/Block_3/LayerScale_1/v_3`; main-graph values keep their names) and written in graph (topological) order after `input`; each record
//!   carries the native name, producing node, op type, call path and the node's metadata_props.

pub mod assemble;
pub mod rules;
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

/// ONNX Runtime graph optimizations, for both the marked and the unmarked run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Budget for the captured values held by one run (bytes); `None`: [`default_memory_budget`].
    pub max_memory: Option<u64>,
    /// The graph input that receives the image; `None`: the model's only input.
    pub input_name: Option<String>,
}

pub struct OnnxCapture {
    pub written: WrittenDump,
    pub values: usize,
    pub calls_inlined: usize,
    pub observer_effect: bool,
    pub runtime: PathBuf,
    pub run: Duration,
    /// How many marked runs the memory budget took.
    pub runs: usize,
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

/// Whether an external data location names a file under the model's directory: relative, with
/// no `..`. Anything else is refused before a file is opened, so the temporary copy of a model
/// in a read-only directory can never link or copy a file onto itself or outside its directory.
fn stays_inside(location: &str) -> bool {
    use std::path::Component;
    let path = Path::new(location);
    path.components().next().is_some()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
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

/// The inlined model, re-marked for each run: its graph outputs are the original outputs plus
/// the run's values.
struct MarkedModel<'a> {
    model: ModelProto,
    original_outputs: Vec<ValueInfoProto>,
    model_path: &'a Path,
    model_dir: &'a Path,
    externals: &'a BTreeSet<String>,
}

impl MarkedModel<'_> {
    /// Writes the copy marked with `names` and opens it. ONNX Runtime resolves external data
    /// relative to the model and refuses paths that escape its directory (symlinks included), so
    /// the copy goes beside the model when that directory is writable, else into a temporary
    /// directory with the data files hard-linked (or copied, across file systems).
    fn session(
        &mut self,
        env: &ort::environment::Environment,
        opts: &OnnxOptions,
        names: &[&str],
    ) -> Result<(MarkedFile, Session)> {
        let graph = self
            .model
            .graph
            .as_mut()
            .expect("inlined models have a graph");
        graph.output = self.original_outputs.clone();
        let existing: BTreeSet<String> =
            graph.output.iter().filter_map(|o| o.name.clone()).collect();
        for name in names {
            if !existing.contains(*name) {
                graph.output.push(ValueInfoProto {
                    name: Some(name.to_string()),
                    ..Default::default()
                });
            }
        }
        let bytes = self.model.encode_to_vec();
        let file = write_marked(self.model_path, self.model_dir, self.externals, &bytes)?;
        drop(bytes);
        let session = session(env, opts, file.path())?;
        Ok((file, session))
    }
}

/// Bytes each value will take, from the marked session's (inferred) output types; a dimension
/// ONNX Runtime leaves symbolic is taken as the input's batch size when it is the first, else the
/// value's size is unknown (`None`).
fn value_sizes(session: &Session, names: &[&str], input_shape: &[usize]) -> Vec<Option<u64>> {
    let known: std::collections::HashMap<&str, &ort::value::ValueType> = session
        .outputs()
        .iter()
        .map(|o| (o.name(), o.dtype()))
        .collect();
    names
        .iter()
        .map(|n| match known.get(n) {
            Some(ort::value::ValueType::Tensor { ty, shape, .. }) => {
                let mut elements: u64 = 1;
                for (i, &d) in shape.iter().enumerate() {
                    let d = match d {
                        d if d >= 0 => d as u64,
                        _ if i == 0 => input_shape.first().copied().unwrap_or(1) as u64,
                        _ => return None,
                    };
                    elements = elements.saturating_mul(d);
                }
                ty.byte_size(elements as usize).map(|b| b as u64)
            }
            _ => None,
        })
        .collect()
}

/// Splits the values (in graph order) into consecutive runs whose values fit `budget` together.
/// A value of unknown size counts as the largest known one (when no size is known at all, there
/// is one run); a value larger than the budget gets a run of its own (it cannot be captured in
/// less).
pub fn plan_runs(sizes: &[Option<u64>], budget: u64) -> Vec<std::ops::Range<usize>> {
    let largest = sizes.iter().flatten().copied().max().unwrap_or(0);
    let mut runs = Vec::new();
    let (mut start, mut used) = (0, 0u64);
    for (i, size) in sizes.iter().enumerate() {
        let size = size.unwrap_or(largest);
        if i > start && used.saturating_add(size) > budget {
            runs.push(start..i);
            (start, used) = (i, 0);
        }
        used = used.saturating_add(size);
    }
    if start < sizes.len() || runs.is_empty() {
        runs.push(start..sizes.len());
    }
    runs
}

/// The default `--max-memory`: half of the memory available now (Linux `MemAvailable`), else
/// 4 GiB where that cannot be read.
pub fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// Writes one captured value under its stage name (or call path), with its ONNX provenance.
/// The values that are the pieces of `stage`, in piece order.
fn subset_part_names(
    stages: &std::collections::HashMap<String, rules::Recognized>,
    stage: &str,
) -> Vec<String> {
    let mut names: Vec<(usize, &String)> = stages
        .iter()
        .filter_map(|(v, r)| r.part.filter(|_| r.stage == stage).map(|(k, _)| (k, v)))
        .collect();
    names.sort();
    names.into_iter().map(|(_, v)| v.clone()).collect()
}

/// Writes one captured value under its stage name (`rec`) or call path, with its ONNX
/// provenance; `onnx_shape`: the value's shape in ONNX when `e` was cut from it.
fn write_value(
    writer: &mut DumpWriter,
    v: &ValueOrigin,
    rec: Option<&rules::Recognized>,
    e: runtime::Extracted,
    onnx_shape: Option<Vec<usize>>,
) -> Result<()> {
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
    let (name, shape, stage) = match rec {
        Some(r) => {
            extra.insert("onnx_value".into(), Value::String(v.name.clone()));
            extra.insert("stage_rule".into(), Value::String(r.rule.into()));
            let shape = assemble::reshaped(&e.shape, r.reshape);
            if let Some(full) = onnx_shape {
                extra.insert("onnx_shape".into(), json!(full));
                extra.insert("sliced".into(), Value::String("the last hw tokens".into()));
            } else if shape != e.shape {
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
    )
}

/// What the unmarked run of the original model gives.
struct Unmarked {
    input_name: String,
    final_outputs: Vec<String>,
    outputs: Vec<(String, runtime::Extracted<'static>)>,
}

/// Opens the original model as it is, checks the input against it and runs it once.
fn unmarked_run(
    env: &ort::environment::Environment,
    opts: &OnnxOptions,
    input: &super::input::ModelInput,
) -> Result<Unmarked> {
    let mut plain = session(env, opts, &opts.model)?;
    let graph_inputs: Vec<String> = plain
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let input_index = match (&opts.input_name, graph_inputs.len()) {
        (Some(name), _) => graph_inputs.iter().position(|n| n == name).ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no input named {name:?}; its inputs are: {} (pass one of them to \
                 --input-name)",
                opts.model.display(),
                graph_inputs.join(", ")
            )
        })?,
        (None, 1) => 0,
        (None, n) => bail!(
            "{} has {n} inputs ({}); capture onnx feeds one image tensor and cannot fill the \
             others. Name the image input with --input-name only if the others are optional",
            opts.model.display(),
            graph_inputs.join(", ")
        ),
    };
    let input_name = graph_inputs[input_index].clone();
    let want_shape: Vec<i64> = match plain.inputs()[input_index].dtype() {
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
    let final_outputs: Vec<String> = plain
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let out = plain
        .run(ort::inputs![input_name.as_str() => feed(input)?])
        .map_err(ort_err(format!("running {}", opts.model.display())))?;
    let outputs = final_outputs
        .iter()
        .map(|n| {
            let Some(value) = out.get(n.as_str()) else {
                bail!(
                    "ONNX Runtime returned no value for the output {n:?} of {}",
                    opts.model.display()
                );
            };
            Ok((n.clone(), runtime::extract(n, value)?.into_owned()))
        })
        .collect::<Result<_>>()?;
    Ok(Unmarked {
        input_name,
        final_outputs,
        outputs,
    })
}

fn feed(input: &super::input::ModelInput) -> Result<Tensor<f32>> {
    Tensor::from_array((input.shape.to_vec(), input.data.clone().into_boxed_slice()))
        .map_err(ort_err("building the input tensor".into()))
}

/// Whether a value is captured: `--only` keeps it (by name or stage), or it is a final output.
fn keeps(
    opts: &OnnxOptions,
    stages: &std::collections::HashMap<String, rules::Recognized>,
    finals: &BTreeSet<String>,
    v: &ValueOrigin,
) -> bool {
    opts.only.keeps(&v.name)
        || stages
            .get(&v.name)
            .is_some_and(|r| opts.only.keeps(&r.stage))
        || finals.contains(&v.name)
}

pub fn capture(opts: &OnnxOptions) -> Result<OnnxCapture> {
    let (bytes, model) = read_model(&opts.model)?;
    let model_dir = opts
        .model
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let externals = external_files(&model);
    for loc in &externals {
        if !stays_inside(loc) {
            bail!(
                "the model {} names the external data location {loc:?}, which is not a relative \
                 path inside the model's directory (ONNX Runtime refuses such locations too); \
                 re-save the model with its data beside it (onnx.save(..., \
                 save_as_external_data=True, location=\"<name>.data\"))",
                opts.model.display()
            );
        }
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
    let finals: BTreeSet<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default();

    // Three things at once (each is mostly one core's work): hashing the model file, the
    // unmarked run of the original, and inlining + writing + opening the marked copy.
    let (identity, unmarked, inlined, stages, kept, mut marked_model, full) =
        std::thread::scope(|scope| -> Result<_> {
            let hashing = scope.spawn(|| FileIdentity::of_bytes(&opts.model, &bytes));
            let plain = scope.spawn(|| unmarked_run(&env, opts, &input));
            let marked = (|| -> Result<_> {
                let mut inlined = inline_local_functions(model)?;
                let stages = rules::recognize(&inlined.values, &inlined.calls);
                let kept: Vec<usize> = (0..inlined.values.len())
                    .filter(|&i| keeps(opts, &stages, &finals, &inlined.values[i]))
                    .collect();
                let all: Vec<&str> = kept
                    .iter()
                    .map(|&i| inlined.values[i].name.as_str())
                    .collect();
                let model = std::mem::take(&mut inlined.model);
                let original_outputs: Vec<ValueInfoProto> = model
                    .graph
                    .as_ref()
                    .expect("inlined models have a graph")
                    .output
                    .clone();
                let mut marked_model = MarkedModel {
                    model,
                    original_outputs,
                    model_path: &opts.model,
                    model_dir: &model_dir,
                    externals: &externals,
                };
                // The copy with every kept value an output: it is what runs when everything
                // fits the memory budget, and its session tells each value's size.
                let full = marked_model.session(&env, opts, &all)?;
                Ok((inlined, stages, kept, marked_model, full))
            })();
            // The unmarked run's errors (input name, shape, IR version) come first.
            let unmarked = plain.join().expect("the unmarked run does not panic")?;
            let (inlined, stages, kept, marked_model, full) = marked?;
            let identity = hashing.join().expect("hashing does not panic");
            Ok((
                identity,
                unmarked,
                inlined,
                stages,
                kept,
                marked_model,
                full,
            ))
        })?;
    drop(bytes);
    let Unmarked {
        input_name,
        final_outputs,
        outputs: unmarked,
    } = unmarked;
    let Inlined {
        values,
        calls_inlined,
        subgraph_values,
        ..
    } = inlined;
    let marked: Vec<&ValueOrigin> = kept.iter().map(|&i| &values[i]).collect();
    let all: Vec<&str> = marked.iter().map(|v| v.name.as_str()).collect();
    let (full_file, full_session) = full;
    let sizes = value_sizes(&full_session, &all, &input.shape);
    let budget = opts.max_memory.unwrap_or_else(default_memory_budget);
    let runs = plan_runs(&sizes, budget);
    let estimated_total: u64 = sizes.iter().map(|s| s.unwrap_or(0)).sum();
    if runs.len() > 1 {
        eprintln!(
            "the {} marked values take about {} together, more than the memory budget of {} \
             (--max-memory): capturing them over {} runs",
            marked.len(),
            bytesize::ByteSize(estimated_total).display().iec(),
            bytesize::ByteSize(budget).display().iec(),
            runs.len()
        );
    }
    let mut full = Some((full_file, full_session));
    if runs.len() > 1 {
        full = None; // every run gets a copy marked with its own subset
    }

    let mut manifest = Manifest::for_this_process(SourceKind::Onnx);
    manifest.model = Some(identity);
    manifest.frameworks.insert(
        "onnxruntime".into(),
        format!("API {} ({})", ort::MINOR_VERSION, runtime.display()),
    );
    manifest.device = Some("cpu".into());
    manifest.input = Some(input.provenance.clone());
    let mut writer =
        DumpWriter::create_for(&opts.output, manifest, marked.len() + unmarked.len() + 5)?;
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
    let bar = crate::progress::count_bar(marked.len() as u64, "values captured");
    let mut run = Duration::ZERO;
    let mut observer_effect = false;
    let mut run_records = Vec::new();
    let mut norm: Option<(Vec<usize>, safetensors::Dtype, Vec<u8>)> = None;
    let mut written_stages: std::collections::HashMap<String, Vec<usize>> = Default::default();
    type Piece = Option<(Vec<usize>, safetensors::Dtype, Vec<u8>)>;
    let mut parts: std::collections::HashMap<String, Vec<Piece>> = Default::default();
    for (index, range) in runs.iter().enumerate() {
        let subset = &marked[range.clone()];
        let names: Vec<&str> = subset.iter().map(|v| v.name.as_str()).collect();
        let (_file, mut session_marked) = match full.take() {
            Some(both) => both,
            None => marked_model.session(&env, opts, &names)?,
        };
        if runs.len() > 1 {
            bar.set_message(format!(
                "values captured (run {}/{})",
                index + 1,
                runs.len()
            ));
        }
        let started = Instant::now();
        let mut out = session_marked
            .run(ort::inputs![input_name.as_str() => feed(&input)?])
            .map_err(ort_err(format!(
                "running the marked copy of {}",
                opts.model.display()
            )))?;
        let elapsed = started.elapsed();
        run += elapsed;
        // The model's own outputs come with every run: each is checked against the unmarked run.
        for (name, u) in &unmarked {
            let Some(value) = out.get(name.as_str()) else {
                bail!("ONNX Runtime returned no value for the model output {name}");
            };
            let e = runtime::extract(name, value)?;
            observer_effect |= u.bytes != e.bytes || u.shape != e.shape;
        }
        let mut bytes_written = 0u64;
        for v in subset {
            // Taken out of the run's outputs, written, and dropped: one value at a time.
            let Some(value) = out.remove(v.name.as_str()) else {
                bail!(
                    "ONNX Runtime returned no value {} although it was marked",
                    v.name
                );
            };
            // Borrowed from ONNX Runtime's buffer; `value` is freed at the end of the iteration.
            let e = runtime::extract(&v.name, &value)?;
            bytes_written += e.bytes.len() as u64;
            let mut rec = stages.get(&v.name);
            let mut e = e;
            let mut onnx_shape = None;
            if let Some(r) = rec {
                if let Some((k, n)) = r.part {
                    // A piece of a stage: written under its own name; the stage once complete.
                    let pieces = parts
                        .entry(r.stage.clone())
                        .or_insert_with(|| vec![None; n]);
                    pieces[k] = Some((e.shape.clone(), e.dtype, e.bytes.to_vec()));
                    if pieces.iter().all(Option::is_some) {
                        let pieces: Vec<_> = pieces.drain(..).flatten().collect();
                        let dtype = pieces[0].1;
                        let element = crate::dump::element::element_size(dtype).max(1);
                        let same_dtype = pieces.iter().all(|p| p.1 == dtype);
                        let joined: Vec<(Vec<usize>, Vec<u8>)> =
                            pieces.into_iter().map(|(s, _, b)| (s, b)).collect();
                        if let (true, Some((shape, bytes))) =
                            (same_dtype, assemble::concat_last(&joined, element))
                        {
                            let shape = assemble::reshaped(&shape, r.reshape);
                            let mut extra = serde_json::Map::new();
                            extra.insert("derived".into(), Value::String(
                                "concatenation of the q, k and v projections along the last axis".into(),
                            ));
                            extra.insert("stage_rule".into(), Value::String(r.rule.into()));
                            extra.insert(
                                "onnx_values".into(),
                                json!(subset_part_names(&stages, &r.stage)),
                            );
                            writer.write(
                                &r.stage,
                                TensorRecord {
                                    native: String::new(),
                                    stage: Some(r.stage.clone()),
                                    extra,
                                },
                                dtype,
                                &shape,
                                &bytes,
                            )?;
                            written_stages.insert(r.stage.clone(), shape);
                        }
                    }
                    rec = None;
                } else if r.reshape == rules::Reshape::PatchRows {
                    let hw = written_stages
                        .get("patch_embed")
                        .and_then(|s| s.get(1))
                        .copied();
                    match hw.and_then(|hw| {
                        assemble::patch_rows(
                            &e.shape,
                            &e.bytes,
                            crate::dump::element::element_size(e.dtype).max(1),
                            hw,
                        )
                    }) {
                        Some((shape, bytes)) => {
                            onnx_shape = Some(e.shape.clone());
                            e = runtime::Extracted {
                                dtype: e.dtype,
                                shape,
                                bytes: bytes.into(),
                            };
                        }
                        None => rec = None,
                    }
                }
            }
            if let Some(r) = rec {
                let shape = assemble::reshaped(&e.shape, r.reshape);
                if r.stage == "norm" {
                    norm = Some((shape.clone(), e.dtype, e.bytes.to_vec()));
                }
                written_stages.insert(r.stage.clone(), shape);
            }
            write_value(&mut writer, v, rec, e, onnx_shape)?;
            bar.inc(1);
        }
        run_records.push(json!({
            "values": subset.len(),
            "bytes": bytes_written,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    bar.finish_and_clear();
    // Head views the model has no value for (jax2onnx's Equinox export drops the storage tokens
    // and does not pool): derived from `norm`, R = N - 1 - hw with hw from `patches`, else from
    // `patch_embed` (torch exports with token pooling have no `patches` value).
    let derived = match &norm {
        Some((shape, dtype, bytes)) => crate::capture::head::write_derived(
            &mut writer,
            (shape, bytes, *dtype),
            &written_stages,
        )?,
        None => Vec::new(),
    };
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
            "max_memory": budget,
            "runs": run_records,
            "derived_from_norm": derived,
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
        runs: runs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::{plan_runs, stays_inside};

    #[test]
    fn external_locations_must_stay_in_the_model_directory() {
        assert!(stays_inside("m.onnx.data"));
        assert!(stays_inside("weights/m.data"));
        assert!(stays_inside("./m.data"));
        assert!(!stays_inside("/etc/passwd"));
        assert!(!stays_inside("../elsewhere/m.data"));
        assert!(!stays_inside("weights/../../m.data"));
        assert!(!stays_inside(""));
    }

    #[test]
    fn everything_in_one_run_when_it_fits() {
        assert_eq!(plan_runs(&[Some(10), Some(20), Some(30)], 60), vec![0..3]);
        assert_eq!(plan_runs(&[], 60), vec![0..0]);
    }

    #[test]
    fn consecutive_runs_each_within_the_budget() {
        let sizes = [Some(10), Some(20), Some(30), Some(5), Some(40)];
        assert_eq!(plan_runs(&sizes, 35), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn a_value_larger_than_the_budget_runs_alone() {
        let sizes = [Some(10), Some(100), Some(10)];
        assert_eq!(plan_runs(&sizes, 50), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn unknown_sizes_count_as_the_largest_known() {
        let sizes = [Some(10), None, Some(30), None];
        assert_eq!(plan_runs(&sizes, 40), vec![0..2, 2..3, 3..4]);
        // Nothing known: nothing to plan with, one run.
        assert_eq!(plan_runs(&[None, None], 1), vec![0..2]);
    }
}
