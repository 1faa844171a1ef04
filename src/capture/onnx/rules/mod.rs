//! Recognition of canonical DINOv3 stages (docs/stages.md) among the values of an inlined ONNX
//! model, from the structure of the graph rather than from value names (exporters name values
//! generically: `v_3`, `add_out_0`, `mul_12`).
//!
//! Contract:
//! - each exporter's rules are one [`StageRules`] in one file of this folder, listed once in
//!   [`EXPORTERS`]; an exporter file depends on this module (and torch's on the shared
//!   `timm_layout`), never on another exporter's file;
//! - [`recognize`] asks the exporters in [`EXPORTERS`] order: the first whose
//!   [`StageRules::applies`] holds and that recognizes at least one value decides, the later
//!   ones are not asked;
//! - the result maps value names to [`Recognized`] stages; a value is mapped at most once and a
//!   stage given to at most one value (the first claim wins, see [`Out`]); anything not
//!   recognized keeps its name. How the recognized tensors are then shaped and assembled is
//!   [`super::assemble`]'s business.
//!
//! Adding an exporter: a file with a unit struct implementing [`StageRules`], a `mod` line here,
//! and its entry in [`EXPORTERS`].

pub mod jax2onnx;
mod timm_layout;
pub mod torch_dynamo;
pub mod torch_legacy;

use crate::model::Stage;
use crate::onnx::inline::{Call, ValueOrigin};
use std::collections::{HashMap, HashSet};

/// The exporters whose stages are recognized, in the order they are asked.
pub static EXPORTERS: &[&dyn StageRules] = &[
    &jax2onnx::Jax2Onnx,
    &torch_dynamo::TorchDynamo,
    &torch_legacy::TorchLegacy,
];

/// What the rules look at: the inlined graph's values (graph order) and expanded calls.
#[derive(Clone, Copy)]
pub struct InlinedGraph<'a> {
    pub values: &'a [ValueOrigin],
    pub calls: &'a [Call],
}

/// One exporter's stage rules.
pub trait StageRules: Sync {
    /// The rule's name, recorded as each recognized tensor's `stage_rule`.
    fn name(&self) -> &'static str;
    /// Whether the graph bears this exporter's marks (cheap; recognizes nothing).
    fn applies(&self, graph: InlinedGraph) -> bool;
    /// Claims values for stages in `out`; called only when [`StageRules::applies`] holds.
    fn recognize(&self, graph: InlinedGraph, out: &mut Out);
}

/// How a recognized value's shape is written (its bytes never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshape {
    AsIs,
    /// Rank 2 [B·N, D] -> [1, B·N, D].
    PrependBatch,
    /// Drop a size-1 axis.
    Squeeze(usize),
    /// A per-token table over all N tokens ([1, N, 1, hd] or [N, hd]): its last hw rows, as
    /// [hw, hd] (the bytes of the prefix tokens are dropped; hw = the patch grid's size).
    PatchRows,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognized {
    pub stage: Stage,
    pub reshape: Reshape,
    /// Which rule matched (recorded in the manifest).
    pub rule: &'static str,
    /// `Some((k, n))`: the value is the k-th of n pieces that, concatenated along the last axis,
    /// make the stage (Equinox's separate q, k, v projections make `attn.qkv`); the value keeps
    /// its own name and the stage is written once all n pieces are captured.
    pub part: Option<(usize, usize)>,
}

/// The recognition being built: value name -> stage, each value and each stage (or stage
/// piece) claimed at most once; later claims of either are ignored.
#[derive(Default)]
pub struct Out {
    map: HashMap<String, Recognized>,
    /// Stages (and stage pieces) claimed.
    taken: HashSet<(Stage, Option<usize>)>,
}

impl Out {
    /// Claims `value` (if any, and not empty) for `stage`.
    pub fn put(
        &mut self,
        value: Option<&String>,
        stage: Stage,
        reshape: Reshape,
        rule: &'static str,
    ) {
        self.claim(
            value,
            Recognized {
                stage,
                reshape,
                rule,
                part: None,
            },
        );
    }

    /// Claims `value` as piece `part` = (k, n) of `stage` (see [`Recognized::part`]).
    pub fn put_part(
        &mut self,
        value: Option<&String>,
        stage: Stage,
        part: (usize, usize),
        reshape: Reshape,
        rule: &'static str,
    ) {
        self.claim(
            value,
            Recognized {
                stage,
                reshape,
                rule,
                part: Some(part),
            },
        );
    }

    /// The first claim of a value, and of a stage (or stage piece), wins.
    fn claim(&mut self, value: Option<&String>, recognized: Recognized) {
        let Some(value) = value else { return };
        let piece = recognized.part.map(|(k, _)| k);
        if value.is_empty()
            || self.map.contains_key(value)
            || !self.taken.insert((recognized.stage, piece))
        {
            return;
        }
        self.map.insert(value.clone(), recognized);
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Value name -> recognized stage, by the first exporter of [`EXPORTERS`] that applies and
/// recognizes anything.
pub fn recognize(values: &[ValueOrigin], calls: &[Call]) -> HashMap<String, Recognized> {
    let graph = InlinedGraph { values, calls };
    let mut out = Out::default();
    for rules in EXPORTERS {
        if rules.applies(graph) {
            rules.recognize(graph, &mut out);
            if !out.is_empty() {
                break;
            }
        }
    }
    out.map
}
