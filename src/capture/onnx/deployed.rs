//! The deployed session: the original model, unmarked, at the optimization level users run it
//! with (ONNX Runtime's default, `all`), against the graph as exported.
//!
//! Contract:
//! - [`optimizer_effect`] compares the deployed run's final outputs with the unmarked run at the
//!   marked runs' level (graph semantics), output by output, with the default tolerance; `None`
//!   when the two levels are the same (nothing to measure);
//! - [`HeadlineSources`] finds where stages sit in the model's final outputs: an output the rules
//!   recognized as a stage, or a `Concat` (reached through `Identity` nodes) of recognized values,
//!   its axis read off the captured shapes (the one axis along which the pieces add up);
//! - [`HeadlineSources::deployed_headline`] gives the headline stages (`cls`, `pooled`) of the
//!   deployed run: sliced out of its outputs and shaped as the captured stage, or derived from
//!   `norm` / `patches` exactly as the marked run's are ([`crate::capture::head`]). Each is written
//!   as `deployed/<stage>` ([`crate::dump::DEPLOYED_PREFIX`]) with `from` saying which output and
//!   which slice. A model whose outputs hold no headline stage gets none (its headline stays the
//!   captured one).

use super::rules::Recognized;
use super::runtime::Extracted;
use super::session::Unmarked;
use crate::dump::{DumpWriter, OptimizerEffect, OutputEffect, TensorRecord, deployed_name};
use crate::metrics::{self, Tolerance, View};
use crate::model::{HeadStage, Stage};
use crate::onnx::inline::ValueOrigin;
use anyhow::Result;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::HashMap;

/// The deployed run against the run at graph semantics; `None` when they ran at the same level.
pub(super) fn optimizer_effect(deployed: &Unmarked, graph: &Unmarked) -> Option<OptimizerEffect> {
    if deployed.opt_level == graph.opt_level {
        return None;
    }
    let outputs: Vec<OutputEffect> = deployed
        .outputs
        .iter()
        .map(|(name, d)| {
            let g = graph
                .outputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, g)| g);
            output_effect(name, d, g)
        })
        .collect();
    Some(OptimizerEffect {
        deployed_opt_level: deployed.opt_level.name().into(),
        graph_opt_level: graph.opt_level.name().into(),
        max_abs: outputs.iter().filter_map(|o| o.max_abs).fold(0.0, f64::max),
        over_tolerance: outputs
            .iter()
            .any(|o| o.max_abs.is_none() || o.over_tolerance > 0),
        outputs,
    })
}

fn output_effect(name: &str, deployed: &Extracted, graph: Option<&Extracted>) -> OutputEffect {
    let comparable = graph.filter(|g| g.shape == deployed.shape && g.dtype == deployed.dtype);
    let Some(graph) = comparable else {
        return OutputEffect {
            name: name.into(),
            max_abs: None,
            cosine: None,
            over_tolerance: 0,
        };
    };
    let c = metrics::compare(view(deployed), view(graph), Tolerance::DEFAULT);
    OutputEffect {
        name: name.into(),
        max_abs: Some(c.max_abs),
        cosine: c.cosine,
        over_tolerance: c.over_tolerance,
    }
}

fn view<'e>(e: &'e Extracted) -> View<'e> {
    View {
        dtype: e.dtype,
        data: &e.bytes,
    }
}

/// A stage inside a final output: the whole output, or `len` entries from `start` along `axis`.
#[derive(Debug, Clone, PartialEq)]
struct Region {
    stage: Stage,
    slice: Option<(usize, usize, usize)>,
}

/// What locating stages in the outputs needs: the graph's values, the recognition, the captured
/// shapes (ONNX value name -> shape as ONNX Runtime gave it) and the stages as written.
pub(super) struct HeadlineSources<'a> {
    pub values: &'a [ValueOrigin],
    pub stages: &'a HashMap<String, Recognized>,
    pub captured_shapes: &'a HashMap<String, Vec<usize>>,
    pub written: &'a HashMap<Stage, Vec<usize>>,
}

/// One deployed headline tensor: its stage, how it was taken, its F32 bytes and shape.
struct DeployedStage {
    stage: Stage,
    from: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HeadlineSources<'_> {
    /// Writes the deployed run's headline stages as `deployed/<stage>`; returns the stages.
    pub(super) fn write(&self, writer: &mut DumpWriter, deployed: &Unmarked) -> Result<Vec<Stage>> {
        let mut written = Vec::new();
        for d in self.deployed_headline(&deployed.outputs) {
            let mut extra = serde_json::Map::new();
            extra.insert("run".into(), Value::String("deployed".into()));
            extra.insert(
                "opt_level".into(),
                Value::String(deployed.opt_level.name().into()),
            );
            extra.insert("of_stage".into(), Value::String(d.stage.to_string()));
            extra.insert("from".into(), Value::String(d.from));
            let record = TensorRecord {
                native: d.stage.to_string(),
                stage: None,
                extra,
            };
            let name = deployed_name(&d.stage.to_string());
            writer.write(&name, record, Dtype::F32, &d.shape, &d.bytes)?;
            written.push(d.stage);
        }
        Ok(written)
    }

    /// The headline stages of the deployed outputs (see the module docs).
    fn deployed_headline(&self, outputs: &[(String, Extracted)]) -> Vec<DeployedStage> {
        let mut found: HashMap<Stage, DeployedStage> = HashMap::new();
        for (name, e) in outputs {
            if e.dtype != Dtype::F32 {
                continue;
            }
            for region in self.regions(name, 0) {
                if let Some(d) = self.cut(name, e, &region) {
                    found.entry(d.stage).or_insert(d);
                }
            }
        }
        [HeadStage::Cls, HeadStage::Pooled]
            .into_iter()
            .filter_map(|head| self.headline_stage(head, &mut found))
            .collect()
    }

    /// `head` taken as is (out of `found`), else derived from the deployed `patches` (pooled)
    /// or `norm`.
    fn headline_stage(
        &self,
        head: HeadStage,
        found: &mut HashMap<Stage, DeployedStage>,
    ) -> Option<DeployedStage> {
        let stage = Stage::Head(head);
        if let Some(d) = found.remove(&stage) {
            return Some(d);
        }
        if let (HeadStage::Pooled, Some(p)) = (head, found.get(&Stage::Head(HeadStage::Patches)))
            && let [1, tokens, d] = p.shape[..]
        {
            return Some(DeployedStage {
                stage,
                from: format!("mean over tokens of {} (f64 accumulation)", p.from),
                shape: vec![1, d],
                bytes: crate::capture::head::mean_over_tokens(&p.bytes, tokens, d),
            });
        }
        let norm = found.get(&Stage::NORM)?;
        let storage = crate::capture::head::storage_tokens(&norm.shape, self.written)?;
        let derived = crate::capture::head::derive(&norm.shape, &norm.bytes, Dtype::F32, storage);
        let (_, how, (shape, bytes)) = derived.into_iter().find(|(h, _, _)| *h == head)?;
        Some(DeployedStage {
            stage,
            from: format!("{how} with norm = {}", norm.from),
            shape,
            bytes,
        })
    }

    /// Where recognized stages sit in the value `name` (`depth`: Identity/Concat levels walked).
    fn regions(&self, name: &str, depth: usize) -> Vec<Region> {
        if let Some(r) = self.stages.get(name).filter(|r| r.part.is_none()) {
            return vec![Region {
                stage: r.stage,
                slice: None,
            }];
        }
        let producer = self.values.iter().find(|v| v.name == name);
        match producer {
            Some(v) if depth < 8 && v.op_type == "Identity" && v.inputs.len() == 1 => {
                self.regions(&v.inputs[0], depth + 1)
            }
            Some(v) if v.op_type == "Concat" => self.concat_regions(v),
            _ => Vec::new(),
        }
    }

    /// The recognized inputs of a Concat, each with its place along the concatenation axis.
    fn concat_regions(&self, concat: &ValueOrigin) -> Vec<Region> {
        let Some(out) = self.captured_shapes.get(&concat.name) else {
            return Vec::new();
        };
        let inputs: Option<Vec<&Vec<usize>>> = concat
            .inputs
            .iter()
            .map(|i| self.captured_shapes.get(i))
            .collect();
        let Some(axis) = inputs.as_deref().and_then(|ins| concat_axis(out, ins)) else {
            return Vec::new();
        };
        let mut start = 0;
        let mut regions = Vec::new();
        for (input, shape) in concat.inputs.iter().zip(inputs.unwrap_or_default()) {
            let len = shape[axis];
            if let Some(r) = self.stages.get(input).filter(|r| r.part.is_none()) {
                regions.push(Region {
                    stage: r.stage,
                    slice: Some((axis, start, len)),
                });
            }
            start += len;
        }
        regions
    }

    /// The region of output `name` as the stage is written (shape as captured), F32 bytes.
    fn cut(&self, name: &str, e: &Extracted, region: &Region) -> Option<DeployedStage> {
        let (shape, bytes, from) = match region.slice {
            None => (e.shape.clone(), e.bytes.to_vec(), name.to_string()),
            Some((axis, start, len)) => {
                let (shape, bytes) = slice_axis(&e.shape, &e.bytes, 4, axis, start, len)?;
                (
                    shape,
                    bytes,
                    describe_slice(name, e.shape.len(), axis, start, len),
                )
            }
        };
        let elements: usize = shape.iter().product();
        let stage_shape = self
            .written
            .get(&region.stage)
            .filter(|s| s.iter().product::<usize>() == elements)
            .cloned()
            .unwrap_or(shape);
        Some(DeployedStage {
            stage: region.stage,
            from,
            shape: stage_shape,
            bytes,
        })
    }
}

/// The one axis along which `inputs` concatenate into `out` (the others equal); `None` if not so.
fn concat_axis(out: &[usize], inputs: &[&Vec<usize>]) -> Option<usize> {
    if inputs.is_empty() || inputs.iter().any(|s| s.len() != out.len()) {
        return None;
    }
    (0..out.len()).find(|&axis| {
        let sum: usize = inputs.iter().map(|s| s[axis]).sum();
        sum == out[axis]
            && inputs.iter().all(|s| {
                (0..out.len())
                    .filter(|&k| k != axis)
                    .all(|k| s[k] == out[k])
            })
    })
}

/// `len` entries from `start` along `axis` of a row-major tensor of `element`-byte entries.
fn slice_axis(
    shape: &[usize],
    bytes: &[u8],
    element: usize,
    axis: usize,
    start: usize,
    len: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let dim = *shape.get(axis)?;
    if start + len > dim || bytes.len() != shape.iter().product::<usize>() * element {
        return None;
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product::<usize>() * element;
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let from = (o * dim + start) * inner;
        out.extend_from_slice(&bytes[from..from + len * inner]);
    }
    let mut cut = shape.to_vec();
    cut[axis] = len;
    Some((cut, out))
}

/// `v_0[:, 0:1, :]`.
fn describe_slice(name: &str, rank: usize, axis: usize, start: usize, len: usize) -> String {
    let index: Vec<String> = (0..rank)
        .map(|k| {
            if k == axis {
                format!("{start}:{}", start + len)
            } else {
                ":".into()
            }
        })
        .collect();
    format!("{name}[{}]", index.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::onnx::OptLevel;

    fn run(level: OptLevel, values: &[f32]) -> Unmarked {
        let bytes: Vec<u8> = bytemuck::cast_slice(values).to_vec();
        Unmarked {
            opt_level: level,
            input_name: "x".into(),
            final_outputs: vec!["y".into()],
            outputs: vec![(
                "y".into(),
                Extracted {
                    dtype: Dtype::F32,
                    shape: vec![1, values.len()],
                    bytes: bytes.into(),
                },
            )],
        }
    }

    #[test]
    fn optimizer_effect_is_measured_between_levels_and_judged_by_the_default_tolerance() {
        let graph = run(OptLevel::Disable, &[1.0, 2.0, 3.0]);
        let close = run(OptLevel::All, &[1.0, 2.0 + 1e-6, 3.0]);
        let e = optimizer_effect(&close, &graph).unwrap();
        assert_eq!(
            (e.deployed_opt_level.as_str(), e.graph_opt_level.as_str()),
            ("all", "disable")
        );
        assert!((e.max_abs - 1e-6).abs() < 1e-7 && !e.over_tolerance);
        let far = run(OptLevel::All, &[1.0, 2.5, 3.0]);
        let e = optimizer_effect(&far, &graph).unwrap();
        assert_eq!(e.max_abs, 0.5);
        assert!(e.over_tolerance && e.outputs[0].over_tolerance == 1);
        // The same level twice: nothing to measure.
        assert!(optimizer_effect(&run(OptLevel::Disable, &[9.0]), &graph).is_none());
        // Outputs that cannot be compared count as over tolerance.
        let other_shape = run(OptLevel::All, &[1.0, 2.0]);
        let e = optimizer_effect(&other_shape, &graph).unwrap();
        assert!(e.over_tolerance && e.outputs[0].max_abs.is_none());
    }

    #[test]
    fn concat_axis_is_the_one_that_adds_up() {
        assert_eq!(
            concat_axis(&[1, 197, 8], &[&vec![1, 1, 8], &vec![1, 196, 8]]),
            Some(1)
        );
        assert_eq!(
            concat_axis(&[1, 5, 8], &[&vec![1, 5, 3], &vec![1, 5, 5]]),
            Some(2)
        );
        assert_eq!(
            concat_axis(&[1, 5, 8], &[&vec![1, 5, 3], &vec![1, 4, 5]]),
            None
        );
        assert_eq!(concat_axis(&[1, 5], &[&vec![1, 5, 1]]), None);
    }

    #[test]
    fn slice_axis_takes_rows_of_every_outer_index() {
        // shape [2, 3, 2], values 0..12 as u8.
        let bytes: Vec<u8> = (0..12).collect();
        let (shape, cut) = slice_axis(&[2, 3, 2], &bytes, 1, 1, 1, 2).unwrap();
        assert_eq!(shape, vec![2, 2, 2]);
        assert_eq!(cut, vec![2, 3, 4, 5, 8, 9, 10, 11]);
        assert!(slice_axis(&[2, 3, 2], &bytes, 1, 1, 2, 2).is_none());
        assert!(slice_axis(&[2, 3, 2], &bytes[1..], 1, 1, 0, 1).is_none());
        assert_eq!(describe_slice("v_0", 3, 1, 0, 1), "v_0[:, 0:1, :]");
    }
}
