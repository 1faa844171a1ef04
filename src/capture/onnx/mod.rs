//! `dinodiff capture onnx`: every intermediate value of an ONNX Runtime run, values inside local
//! functions included, into a dump.
//!
//! Contract (this stage of the backend):
//! - the model is decoded ([`crate::onnx::proto`]), its local functions inlined
//!   ([`crate::onnx::inline`]) and every value a node produces (or those `--only` keeps) is added
//!   as a graph output; the rewritten model is written beside the original (a hidden temporary
//!   file, removed afterwards) so that its external data files resolve, or, when that directory
//!   is read-only, into a temporary directory holding hard links (or copies) of them;
//! - the original model is also run unmarked twice: at the marked runs' level (`--opt-level`,
//!   default `disable`: the graph as exported), to tell whether the marked run's final outputs
//!   are bit-identical to it (the observer effect), and as users deploy it
//!   (`--deploy-opt-level`, default `all`, ONNX Runtime's default). The deployed run's outputs
//!   are stored as `unmarked/<output>`, its headline stages as `deployed/cls` and
//!   `deployed/pooled` ([`deployed`]), and the difference between the two unmarked runs is the
//!   optimizer effect (summary, manifest `onnx.optimizer_effect`);
//! - values recognized as canonical stages ([`rules`]) are named by their stage (the ONNX name
//!   goes to the record's `onnx_value`) and shaped or assembled as the stage ([`assemble`]); the
//!   others by call path (`VisionTransformer_1/Block_3/LayerScale_1/v_3`; main-graph values keep
//!   their names) and written in graph (topological) order after `input`; each record carries the
//!   native name, producing node, op type, call path and the node's metadata_props.
//!
//! The parts, one concern each: `model_file` (the model file and its external data),
//! [`runtime`] (loading ONNX Runtime, values out of its buffers), `session` (the unmarked runs
//! and the marked copies), `plan` (runs within the memory budget), `values` (each run's
//! values into the dump), [`rules`] (stage recognition per exporter), [`assemble`] (recognized
//! values into stage tensors), `deployed` (the optimizer effect and the deployed headline).
//! [`capture`] only orchestrates them.

pub mod assemble;
mod deployed;
mod model_file;
mod plan;
pub mod rules;
pub mod runtime;
mod session;
mod values;

pub use plan::{default_memory_budget, plan_runs};

use super::StageFilter;
use super::input::{InputSource, ModelInput};
use crate::dump::{
    DumpWriter, FileIdentity, Manifest, OptimizerEffect, SourceKind, TensorRecord, WrittenDump,
};
use crate::onnx::inline::{Inlined, ValueOrigin, inline_local_functions};
use crate::onnx::proto::ModelProto;
use anyhow::Result;
use model_file::{MarkedFile, ModelFile};
use ort::environment::Environment;
use ort::session::{Session, builder::GraphOptimizationLevel};
use plan::RunPlan;
use rules::Recognized;
use serde_json::json;
use session::{MarkedModel, Unmarked};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use values::{MarkedRuns, RunsDone};

/// ONNX Runtime graph optimizations (`disable` keeps the graph as exported; `all` is ONNX
/// Runtime's default).
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

    pub fn name(self) -> &'static str {
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
    /// The marked runs' level (and the unmarked run the observer effect is checked against).
    pub opt_level: OptLevel,
    /// The deployed run's level: what the headline and the optimizer effect are measured at.
    pub deploy_opt_level: OptLevel,
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
    /// The deployed run against the graph as exported (`None`: both at the same level).
    pub optimizer_effect: Option<OptimizerEffect>,
    /// The headline stages written from the deployed run (`deployed/<stage>`).
    pub deployed_headline: Vec<crate::model::Stage>,
    pub runtime: PathBuf,
    pub run: Duration,
    /// How many marked runs the memory budget took.
    pub runs: usize,
}

/// Captures every kept value of `opts.model` into the dump `opts.output` (see the module docs):
/// the model file, ONNX Runtime, the prepared marked copy, the run plan, the runs, the manifest.
pub fn capture(opts: &OnnxOptions) -> Result<OnnxCapture> {
    let (bytes, model) = model_file::read_model(&opts.model)?;
    let file = ModelFile::locate(&opts.model, &model)?;
    let input = opts.input.load()?;
    let (env, runtime) = runtime::load(opts.ort_lib.as_deref())?;
    let prepared = prepare(&env, opts, &file, &input, &bytes, model)?;
    drop(bytes);
    let (unmarked, mut marked) = (prepared.unmarked, prepared.marked);
    let graph = unmarked.graph.as_ref().unwrap_or(&unmarked.deployed);
    let captured: Vec<&ValueOrigin> = marked
        .kept
        .iter()
        .map(|&i| &marked.inlined.values[i])
        .collect();
    let plan = RunPlan::new(
        &marked.full.1,
        &names(&captured),
        &input.shape,
        opts.max_memory,
    );
    plan.announce(captured.len());
    // With several runs, each gets a copy marked with its own values.
    let mut full = (plan.runs.len() == 1).then_some(marked.full);
    let mut writer = open_dump(
        opts,
        prepared.identity,
        &runtime,
        &input,
        &unmarked.deployed,
        captured.len(),
    )?;
    let mut runs = MarkedRuns::new(
        &opts.model,
        &input,
        graph,
        &marked.stages,
        captured.len(),
        plan.runs.len(),
    );
    for (index, range) in plan.runs.iter().enumerate() {
        let subset = &captured[range.clone()];
        let (_file, mut session) = match full.take() {
            Some(both) => both,
            None => marked.model.session(&env, opts, &names(subset))?,
        };
        runs.run(&mut writer, &mut session, index, subset)?;
    }
    let done = runs.finish(&mut writer)?;
    values::write_unmarked(&mut writer, &unmarked.deployed)?;
    let deployed_headline = deployed::HeadlineSources {
        values: &marked.inlined.values,
        stages: &marked.stages,
        captured_shapes: &done.captured_shapes,
        written: &done.written_stages,
    }
    .write(&mut writer, &unmarked.deployed)?;
    let optimizer_effect = deployed::optimizer_effect(&unmarked.deployed, graph);
    let facts = onnx_facts(
        opts,
        (&marked.inlined, captured.len()),
        &plan,
        &done,
        graph,
        (&optimizer_effect, &deployed_headline),
    );
    writer.annotate("onnx", facts);
    Ok(OnnxCapture {
        written: writer.finish()?,
        values: captured.len(),
        calls_inlined: marked.inlined.calls_inlined,
        observer_effect: done.observer_effect,
        optimizer_effect,
        deployed_headline,
        runtime,
        run: done.elapsed,
        runs: plan.runs.len(),
    })
}

/// The manifest's `onnx` record: how the capture ran.
fn onnx_facts(
    opts: &OnnxOptions,
    (inlined, values_marked): (&Inlined, usize),
    plan: &RunPlan,
    done: &RunsDone,
    unmarked: &Unmarked,
    (optimizer_effect, deployed_headline): (&Option<OptimizerEffect>, &[crate::model::Stage]),
) -> serde_json::Value {
    json!({
        "opt_level": opts.opt_level.name(),
        "deploy_opt_level": opts.deploy_opt_level.name(),
        "optimizer_effect": optimizer_effect,
        "deployed_headline": deployed_headline.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "threads": opts.threads,
        "calls_inlined": inlined.calls_inlined,
        "values_marked": values_marked,
        "max_memory": plan.budget,
        "runs": done.records,
        "derived_from_norm": done.derived,
        "values_in_subgraphs_not_captured": inlined.subgraph_values,
        "observer_effect": {
            "final_outputs": unmarked.final_outputs,
            "bit_identical": !done.observer_effect,
        },
    })
}

fn names<'v>(values: &[&'v ValueOrigin]) -> Vec<&'v str> {
    values.iter().map(|v| v.name.as_str()).collect()
}

/// Everything the marked runs start from.
struct Prepared<'a> {
    identity: FileIdentity,
    unmarked: UnmarkedRuns,
    marked: Marked<'a>,
}

/// The unmarked runs of the original model.
struct UnmarkedRuns {
    /// At `--deploy-opt-level`: what users run.
    deployed: Unmarked,
    /// At `--opt-level`, when that differs: the graph as the marked runs compute it.
    graph: Option<Unmarked>,
}

/// The inlined model, what it recognized and keeps, and the copy marked with all it keeps.
struct Marked<'a> {
    /// The inlined model's values and calls (its model is in `model`).
    inlined: Inlined,
    /// Value name -> recognized stage.
    stages: HashMap<String, Recognized>,
    /// The indices of the values captured, in `inlined.values`.
    kept: Vec<usize>,
    model: MarkedModel<'a>,
    /// The copy marked with every kept value, opened: what runs when they all fit the memory
    /// budget, and what tells each value's size.
    full: (MarkedFile, Session),
}

/// Three things at once (each is mostly one core's work): hashing the model file, the unmarked
/// runs of the original, and inlining + recognizing + writing + opening the marked copy. The
/// unmarked runs' errors (input name, shape, IR version) come first.
fn prepare<'a>(
    env: &Environment,
    opts: &OnnxOptions,
    file: &'a ModelFile,
    input: &ModelInput,
    bytes: &[u8],
    model: ModelProto,
) -> Result<Prepared<'a>> {
    let finals: BTreeSet<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| FileIdentity::of_bytes(&opts.model, bytes));
        let plain = scope.spawn(|| unmarked_runs(env, opts, input));
        let marked = mark(env, opts, file, model, &finals);
        let unmarked = plain.join().expect("the unmarked run does not panic")?;
        let marked = marked?;
        let identity = hashing.join().expect("hashing does not panic");
        Ok(Prepared {
            identity,
            unmarked,
            marked,
        })
    })
}

/// The deployed run, and the run at the marked runs' level when that differs.
fn unmarked_runs(
    env: &Environment,
    opts: &OnnxOptions,
    input: &ModelInput,
) -> Result<UnmarkedRuns> {
    let deployed = session::unmarked_run(env, opts, input, opts.deploy_opt_level)?;
    let graph = (opts.opt_level != opts.deploy_opt_level)
        .then(|| session::unmarked_run(env, opts, input, opts.opt_level))
        .transpose()?;
    Ok(UnmarkedRuns { deployed, graph })
}

/// Inlines the model, recognizes its stages, picks the values to capture and opens the copy
/// that marks them all.
fn mark<'a>(
    env: &Environment,
    opts: &OnnxOptions,
    file: &'a ModelFile,
    model: ModelProto,
    finals: &BTreeSet<String>,
) -> Result<Marked<'a>> {
    let mut inlined = inline_local_functions(model)?;
    let stages = rules::recognize(&inlined.values, &inlined.calls);
    let kept: Vec<usize> = (0..inlined.values.len())
        .filter(|&i| keeps(opts, &stages, finals, &inlined.values[i]))
        .collect();
    let all: Vec<&str> = kept
        .iter()
        .map(|&i| inlined.values[i].name.as_str())
        .collect();
    let mut model = MarkedModel::new(std::mem::take(&mut inlined.model), file);
    let full = model.session(env, opts, &all)?;
    Ok(Marked {
        inlined,
        stages,
        kept,
        model,
        full,
    })
}

/// Whether a value is captured: `--only` keeps it (by name or stage), or it is a final output.
fn keeps(
    opts: &OnnxOptions,
    stages: &HashMap<String, Recognized>,
    finals: &BTreeSet<String>,
    v: &ValueOrigin,
) -> bool {
    opts.only.keeps(&v.name)
        || stages
            .get(&v.name)
            .is_some_and(|r| opts.only.keeps(&r.stage.to_string()))
        || finals.contains(&v.name)
}

/// Creates the dump (its manifest says where the values come from) and writes `input` into it;
/// `values`: how many values the runs will write.
fn open_dump(
    opts: &OnnxOptions,
    identity: FileIdentity,
    runtime: &std::path::Path,
    input: &ModelInput,
    unmarked: &Unmarked,
    values: usize,
) -> Result<DumpWriter> {
    let mut manifest = Manifest::for_this_process(SourceKind::Onnx);
    manifest.model = Some(identity);
    manifest.frameworks.insert(
        "onnxruntime".into(),
        format!("API {} ({})", ort::MINOR_VERSION, runtime.display()),
    );
    manifest.device = Some("cpu".into());
    manifest.input = Some(input.provenance.clone());
    let mut writer =
        DumpWriter::create_for(&opts.output, manifest, values + unmarked.outputs.len() + 5)?;
    writer.write(
        crate::model::INPUT_NAME,
        TensorRecord::of_stage(crate::model::Stage::INPUT, unmarked.input_name.clone()),
        safetensors::Dtype::F32,
        &input.shape,
        &input.bytes(),
    )?;
    Ok(writer)
}
