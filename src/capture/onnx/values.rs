//! Value extraction: the marked runs' values, out of ONNX Runtime's buffers and into the dump.
//!
//! Contract:
//! - [`MarkedRuns::run`] runs one marked session and compares the model's own outputs with the
//!   unmarked run's at the same optimization level, byte for byte (any difference is the
//!   observer effect); then takes the
//!   run's values out one at a time, in graph order: each is borrowed from ONNX Runtime's
//!   buffer, placed by the [`StageAssembler`], written (a stage it completed first), and freed
//!   before the next;
//! - a value is written under its stage or its call path, with its ONNX provenance (`node`,
//!   `op_type`, `call_path`, `functions`, `returned_by`, `metadata_props`; for stages
//!   `onnx_value`, `stage_rule` and `onnx_shape` / `sliced` when its shape was rewritten);
//! - [`MarkedRuns::finish`] writes the head views derived from `norm` after the last run;
//!   [`write_unmarked`] writes the deployed (unmarked) run's outputs as `unmarked/<output>`.

use super::assemble::{AssembledStage, PlacedValue, StageAssembler};
use super::rules::Recognized;
use super::runtime::{self, Extracted};
use super::session::{Unmarked, feed, ort_err};
use crate::capture::input::ModelInput;
use crate::dump::{DumpWriter, TensorRecord};
use crate::onnx::inline::ValueOrigin;
use anyhow::{Result, bail};
use ort::session::{Session, SessionOutputs};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The marked runs of one capture, writing their values as they come.
pub(super) struct MarkedRuns<'a> {
    model: &'a Path,
    input: &'a ModelInput,
    unmarked: &'a Unmarked,
    assembler: StageAssembler<'a>,
    bar: indicatif::ProgressBar,
    runs: usize,
    done: RunsDone,
}

/// What the marked runs did.
#[derive(Default)]
pub(super) struct RunsDone {
    /// Time spent running the marked sessions.
    pub elapsed: Duration,
    /// Whether some run's final outputs differ from the unmarked run's.
    pub observer_effect: bool,
    /// Per run: values, bytes, seconds (the manifest's `onnx.runs`).
    pub records: Vec<Value>,
    /// The head views derived from `norm`.
    pub derived: Vec<crate::model::Stage>,
    /// Each captured value's shape as ONNX Runtime gave it.
    pub captured_shapes: HashMap<String, Vec<usize>>,
    /// Each canonical stage written, with its shape.
    pub written_stages: HashMap<crate::model::Stage, Vec<usize>>,
}

impl<'a> MarkedRuns<'a> {
    /// `model`: the original's path (for messages); `stages`: the recognition; `values`: how
    /// many values all `runs` runs mark together.
    pub(super) fn new(
        model: &'a Path,
        input: &'a ModelInput,
        unmarked: &'a Unmarked,
        stages: &'a HashMap<String, Recognized>,
        values: usize,
        runs: usize,
    ) -> MarkedRuns<'a> {
        MarkedRuns {
            model,
            input,
            unmarked,
            assembler: StageAssembler::new(stages),
            bar: crate::progress::count_bar(values as u64, "values captured"),
            runs,
            done: RunsDone::default(),
        }
    }

    /// Runs `session` (run `index`, marked with `subset`) and writes `subset`'s values.
    pub(super) fn run(
        &mut self,
        writer: &mut DumpWriter,
        session: &mut Session,
        index: usize,
        subset: &[&ValueOrigin],
    ) -> Result<()> {
        if self.runs > 1 {
            self.bar
                .set_message(format!("values captured (run {}/{})", index + 1, self.runs));
        }
        let started = Instant::now();
        let mut out = session
            .run(ort::inputs![self.unmarked.input_name.as_str() => feed(self.input)?])
            .map_err(ort_err(format!(
                "running the marked copy of {}",
                self.model.display()
            )))?;
        let elapsed = started.elapsed();
        self.done.elapsed += elapsed;
        self.check_final_outputs(&out)?;
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
            self.done
                .captured_shapes
                .insert(v.name.clone(), e.shape.clone());
            self.write(writer, v, e)?;
            self.bar.inc(1);
        }
        self.done.records.push(json!({
            "values": subset.len(),
            "bytes": bytes_written,
            "seconds": elapsed.as_secs_f64(),
        }));
        Ok(())
    }

    /// Writes the head views derived from `norm` that no value gave; returns what was done.
    pub(super) fn finish(mut self, writer: &mut DumpWriter) -> Result<RunsDone> {
        self.bar.finish_and_clear();
        // Head views the model has no value for (jax2onnx's Equinox export drops the storage
        // tokens and does not pool): derived from `norm`, R = N - 1 - hw with hw from
        // `patches`, else from `patch_embed` (torch exports with token pooling have no
        // `patches` value).
        self.done.derived = self.assembler.write_head_views(writer)?;
        self.done.written_stages = self.assembler.written_stages().clone();
        Ok(self.done)
    }

    /// The model's own outputs come with every run: each is checked against the unmarked run.
    fn check_final_outputs(&mut self, out: &SessionOutputs) -> Result<()> {
        for (name, u) in &self.unmarked.outputs {
            let Some(value) = out.get(name.as_str()) else {
                bail!("ONNX Runtime returned no value for the model output {name}");
            };
            let e = runtime::extract(name, value)?;
            self.done.observer_effect |= u.bytes != e.bytes || u.shape != e.shape;
        }
        Ok(())
    }

    /// Writes one captured value, and the stage it completes if any.
    fn write(&mut self, writer: &mut DumpWriter, v: &ValueOrigin, e: Extracted) -> Result<()> {
        let placement = self.assembler.place(&v.name, e);
        if let Some(stage) = placement.completed {
            write_assembled(writer, stage)?;
        }
        write_value(writer, v, placement.value)
    }
}

/// Writes a stage assembled from several values.
fn write_assembled(writer: &mut DumpWriter, s: AssembledStage) -> Result<()> {
    let mut extra = serde_json::Map::new();
    extra.insert("derived".into(), Value::String(s.derived.into()));
    extra.insert("stage_rule".into(), Value::String(s.rule.into()));
    extra.insert("onnx_values".into(), json!(s.onnx_values));
    writer.write(
        &s.stage.to_string(),
        TensorRecord {
            extra,
            ..TensorRecord::of_stage(s.stage, String::new())
        },
        s.dtype,
        &s.shape,
        &s.bytes,
    )
}

/// The provenance every captured value's record carries.
fn provenance(v: &ValueOrigin) -> serde_json::Map<String, Value> {
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
    extra
}

/// Writes one captured value under its stage name or call path, with its ONNX provenance.
fn write_value(writer: &mut DumpWriter, v: &ValueOrigin, placed: PlacedValue) -> Result<()> {
    let mut extra = provenance(v);
    let (name, stage) = match placed.stage {
        Some(r) => {
            extra.insert("onnx_value".into(), Value::String(v.name.clone()));
            extra.insert("stage_rule".into(), Value::String(r.rule.into()));
            if let Some(onnx_shape) = &placed.onnx_shape {
                extra.insert("onnx_shape".into(), json!(onnx_shape));
            }
            if placed.sliced {
                extra.insert("sliced".into(), Value::String("the last hw tokens".into()));
            }
            (r.stage.to_string(), Some(r.stage.to_string()))
        }
        None => (v.name.clone(), None),
    };
    writer.write(
        &name,
        TensorRecord {
            native: v.native.clone(),
            stage,
            extra,
        },
        placed.dtype,
        &placed.shape,
        &placed.bytes,
    )
}

/// Writes the deployed (unmarked) run's outputs as `unmarked/<output>`.
pub(super) fn write_unmarked(writer: &mut DumpWriter, deployed: &Unmarked) -> Result<()> {
    for (name, u) in &deployed.outputs {
        writer.write(
            &format!("{}{name}", crate::dump::UNMARKED_PREFIX),
            TensorRecord {
                native: name.clone(),
                stage: None,
                extra: [
                    ("run".to_string(), Value::String("unmarked".into())),
                    (
                        "opt_level".to_string(),
                        Value::String(deployed.opt_level.name().into()),
                    ),
                ]
                .into_iter()
                .collect(),
            },
            u.dtype,
            &u.shape,
            &u.bytes,
        )?;
    }
    Ok(())
}
