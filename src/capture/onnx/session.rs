//! ONNX Runtime sessions of the model: the unmarked run of the original, and the marked copies.
//!
//! Contract:
//! - [`open`] loads a model file with the capture's options (`--threads`) at an optimization
//!   level (the marked copies at `--opt-level`, the deployed run at `--deploy-opt-level`); an IR
//!   version the runtime does not accept is an error saying how to re-export or which runtime to
//!   install;
//! - [`unmarked_run`] opens the original model as it is, picks the graph input that receives
//!   the image (`--input-name`, else the only input), checks the input's shape against it and
//!   runs it once; its outputs are kept (copied) for the observer-effect and optimizer-effect
//!   checks and the dump;
//! - [`MarkedModel`] holds the inlined model and, for each run, writes a copy whose graph
//!   outputs are the original outputs plus that run's values ([`super::model_file`] says where)
//!   and opens it; the copy lives as long as the returned [`MarkedFile`].

use super::model_file::{MarkedFile, ModelFile};
use super::runtime::{self, Extracted};
use super::{OnnxOptions, OptLevel};
use crate::capture::input::ModelInput;
use crate::onnx::proto::{ModelProto, ValueInfoProto};
use anyhow::{Result, bail};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use prost::Message;
use std::collections::BTreeSet;
use std::path::Path;

/// Turns an ONNX Runtime error into one that says `what` failed.
pub(super) fn ort_err<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// The model input as an ONNX Runtime tensor.
pub(super) fn feed(input: &ModelInput) -> Result<Tensor<f32>> {
    Tensor::from_array((input.shape.to_vec(), input.data.clone().into_boxed_slice()))
        .map_err(ort_err("building the input tensor".into()))
}

/// Opens the model at `path` with the capture's options, at optimization level `level`.
pub(super) fn open(
    env: &Environment,
    opts: &OnnxOptions,
    path: &Path,
    level: OptLevel,
) -> Result<Session> {
    let what = || format!("ONNX Runtime cannot load {}", path.display());
    let mut b = Session::builder(env).map_err(ort_err(what()))?;
    b = b
        .with_optimization_level(level.ort())
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
pub(super) struct MarkedModel<'a> {
    model: ModelProto,
    original_outputs: Vec<ValueInfoProto>,
    file: &'a ModelFile,
}

impl<'a> MarkedModel<'a> {
    /// `model`: the inlined model of `file`.
    pub(super) fn new(model: ModelProto, file: &'a ModelFile) -> MarkedModel<'a> {
        let original_outputs: Vec<ValueInfoProto> = model
            .graph
            .as_ref()
            .expect("inlined models have a graph")
            .output
            .clone();
        MarkedModel {
            model,
            original_outputs,
            file,
        }
    }

    /// Writes the copy marked with `names` and opens it.
    pub(super) fn session(
        &mut self,
        env: &Environment,
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
        let file = self.file.write_copy(&bytes)?;
        drop(bytes);
        let session = open(env, opts, file.path(), opts.opt_level)?;
        Ok((file, session))
    }
}

/// What an unmarked run of the original model gives.
pub(super) struct Unmarked {
    /// The optimization level it ran at.
    pub opt_level: OptLevel,
    /// The graph input fed the image.
    pub input_name: String,
    pub final_outputs: Vec<String>,
    /// Each final output, copied out of the run.
    pub outputs: Vec<(String, Extracted<'static>)>,
}

/// Opens the original model as it is at optimization level `level`, checks the input against it
/// and runs it once.
pub(super) fn unmarked_run(
    env: &Environment,
    opts: &OnnxOptions,
    input: &ModelInput,
    level: OptLevel,
) -> Result<Unmarked> {
    let mut plain = open(env, opts, &opts.model, level)?;
    let input_name = image_input(opts, &plain, input)?;
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
        opt_level: level,
        input_name,
        final_outputs,
        outputs,
    })
}

/// The name of the graph input that receives the image, checked against the input's shape.
fn image_input(opts: &OnnxOptions, plain: &Session, input: &ModelInput) -> Result<String> {
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
    Ok(input_name)
}
