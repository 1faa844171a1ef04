//! Stage assembly: turning captured values that the rules recognized ([`super::rules`]) into the
//! canonical stage tensors the dump holds. Pure byte and shape work: no ONNX Runtime, no writer
//! (but for [`StageAssembler::write_head_views`]).
//!
//! Contract: [`StageAssembler::place`] takes the captured values one at a time, in graph order,
//! and says how each is written ([`Placement`]):
//! - a recognized value is written as its stage, with the stage's shape ([`reshaped`]): the
//!   batch prepended to [B·N, D] values, a size-1 axis squeezed; its ONNX shape is kept when it
//!   differs;
//! - a per-token table recognized with [`Reshape::PatchRows`] (`rope.cos` / `rope.sin`) is cut
//!   to its last hw rows, hw from the `patch_embed` stage placed before it ([`patch_rows`]);
//!   when that cannot be done, the value is written under its own name, as captured;
//! - a piece of a stage ([`Recognized::part`], the q, k and v projections making `attn.qkv`) is
//!   written under its own name; once every piece is in, the stage is assembled by
//!   concatenating them along the last axis ([`concat_last`]) and reshaped, and comes with the
//!   placement of the last piece (pieces of different dtypes or shapes assemble nothing);
//! - an unrecognized value is written under its own name, as captured.
//!
//! The assembler remembers the shape of each stage placed (what [`crate::capture::head`] reads
//! the patch count from) and a copy of `norm`; [`StageAssembler::write_head_views`] then derives
//! the head views (`cls`, `storage`, `patches`, `pooled`) the model had no value for.

use super::rules::{Recognized, Reshape};
use super::runtime::Extracted;
use crate::dump::DumpWriter;
use crate::model::{Stage, StemStage};
use anyhow::Result;
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::HashMap;

/// How the concatenated pieces of an assembled stage are described in its record.
pub const QKV_CONCATENATION: &str =
    "concatenation of the q, k and v projections along the last axis";

/// A stage assembled from several values (see [`Recognized::part`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledStage {
    pub stage: Stage,
    pub rule: &'static str,
    /// How it was made (the record's `derived`).
    pub derived: &'static str,
    /// The ONNX values it is made of, in piece order.
    pub onnx_values: Vec<String>,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// One captured value as it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedValue<'a, 'r> {
    /// The stage it is written as; `None`: under its own name.
    pub stage: Option<&'r Recognized>,
    pub dtype: Dtype,
    /// The shape it is written with.
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
    /// Its shape in ONNX, when the written shape differs.
    pub onnx_shape: Option<Vec<usize>>,
    /// Whether only its last hw rows are written ([`Reshape::PatchRows`]).
    pub sliced: bool,
}

/// What to write for one captured value: a stage it completed (written first), then itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement<'a, 'r> {
    pub completed: Option<AssembledStage>,
    pub value: PlacedValue<'a, 'r>,
}

impl<'a> Placement<'a, '_> {
    /// `value` written under its own name, as captured, after `completed` if any.
    fn as_captured(value: Extracted<'a>, completed: Option<AssembledStage>) -> Self {
        Placement {
            completed,
            value: PlacedValue {
                stage: None,
                dtype: value.dtype,
                shape: value.shape,
                bytes: value.bytes,
                onnx_shape: None,
                sliced: false,
            },
        }
    }
}

type Piece = (Vec<usize>, Dtype, Vec<u8>);

/// Places captured values as stages; see the module docs.
pub struct StageAssembler<'r> {
    stages: &'r HashMap<String, Recognized>,
    /// Stage -> its pieces captured so far (by piece index).
    pieces: HashMap<Stage, Vec<Option<Piece>>>,
    /// Canonical stage -> the shape it was written with.
    written: HashMap<Stage, Vec<usize>>,
    /// `norm` as written: (shape, dtype, bytes).
    norm: Option<Piece>,
}

impl<'r> StageAssembler<'r> {
    /// `stages`: the recognition, value name -> stage.
    pub fn new(stages: &'r HashMap<String, Recognized>) -> StageAssembler<'r> {
        StageAssembler {
            stages,
            pieces: HashMap::new(),
            written: HashMap::new(),
            norm: None,
        }
    }

    /// How the captured value `name` (its tensor: `value`) is written.
    pub fn place<'a>(&mut self, name: &str, value: Extracted<'a>) -> Placement<'a, 'r> {
        let Some(rec) = self.stages.get(name) else {
            return Placement::as_captured(value, None);
        };
        if let Some(part) = rec.part {
            let completed = self.add_piece(rec, part, &value);
            return Placement::as_captured(value, completed);
        }
        let placed = if rec.reshape == Reshape::PatchRows {
            let Some(cut) = self.cut_patch_rows(&value) else {
                return Placement::as_captured(value, None);
            };
            PlacedValue {
                stage: Some(rec),
                dtype: cut.dtype,
                shape: cut.shape,
                bytes: cut.bytes,
                onnx_shape: Some(value.shape),
                sliced: true,
            }
        } else {
            let shape = reshaped(&value.shape, rec.reshape);
            PlacedValue {
                stage: Some(rec),
                dtype: value.dtype,
                onnx_shape: (shape != value.shape).then_some(value.shape),
                shape,
                bytes: value.bytes,
                sliced: false,
            }
        };
        if rec.stage == Stage::NORM {
            self.norm = Some((placed.shape.clone(), placed.dtype, placed.bytes.to_vec()));
        }
        self.written.insert(rec.stage, placed.shape.clone());
        Placement {
            completed: None,
            value: placed,
        }
    }

    /// Canonical stage -> the shape it was written with, for the stages placed so far.
    pub fn written_stages(&self) -> &HashMap<Stage, Vec<usize>> {
        &self.written
    }

    /// Writes the head views derived from `norm` that no value gave
    /// ([`crate::capture::head::write_derived`]); returns the stages written (none without
    /// `norm`).
    pub fn write_head_views(&self, writer: &mut DumpWriter) -> Result<Vec<Stage>> {
        match &self.norm {
            Some((shape, dtype, bytes)) => {
                crate::capture::head::write_derived(writer, (shape, bytes, *dtype), &self.written)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Keeps piece `part` = (k, n) of `rec`'s stage; the stage once all n are in.
    fn add_piece(
        &mut self,
        rec: &Recognized,
        (k, n): (usize, usize),
        value: &Extracted,
    ) -> Option<AssembledStage> {
        let pieces = self
            .pieces
            .entry(rec.stage)
            .or_insert_with(|| vec![None; n]);
        pieces[k] = Some((value.shape.clone(), value.dtype, value.bytes.to_vec()));
        if !pieces.iter().all(Option::is_some) {
            return None;
        }
        let pieces: Vec<Piece> = pieces.drain(..).flatten().collect();
        let dtype = pieces[0].1;
        let element = crate::dump::element::element_size(dtype).max(1);
        if pieces.iter().any(|p| p.1 != dtype) {
            return None;
        }
        let joined: Vec<(Vec<usize>, Vec<u8>)> =
            pieces.into_iter().map(|(s, _, b)| (s, b)).collect();
        let (shape, bytes) = concat_last(&joined, element)?;
        let shape = reshaped(&shape, rec.reshape);
        self.written.insert(rec.stage, shape.clone());
        Some(AssembledStage {
            stage: rec.stage,
            rule: rec.rule,
            derived: QKV_CONCATENATION,
            onnx_values: self.part_names(rec.stage),
            dtype,
            shape,
            bytes,
        })
    }

    /// The last hw rows of a per-token table, hw = `patch_embed`'s token count.
    fn cut_patch_rows<'a>(&self, value: &Extracted) -> Option<Extracted<'a>> {
        let patch_embed = Stage::Stem(StemStage::PatchEmbed);
        let hw = self.written.get(&patch_embed).and_then(|s| s.get(1))?;
        let element = crate::dump::element::element_size(value.dtype).max(1);
        let (shape, bytes) = patch_rows(&value.shape, &value.bytes, element, *hw)?;
        Some(Extracted {
            dtype: value.dtype,
            shape,
            bytes: bytes.into(),
        })
    }

    /// The values that are the pieces of `stage`, in piece order.
    fn part_names(&self, stage: Stage) -> Vec<String> {
        let mut names: Vec<(usize, &String)> = self
            .stages
            .iter()
            .filter_map(|(v, r)| r.part.filter(|_| r.stage == stage).map(|(k, _)| (k, v)))
            .collect();
        names.sort();
        names.into_iter().map(|(_, v)| v.clone()).collect()
    }
}

/// The shape a recognized value is written with.
pub fn reshaped(shape: &[usize], r: Reshape) -> Vec<usize> {
    match r {
        Reshape::AsIs => shape.to_vec(),
        Reshape::PrependBatch if shape.len() == 2 => vec![1, shape[0], shape[1]],
        Reshape::PrependBatch => shape.to_vec(),
        Reshape::Squeeze(axis) if shape.get(axis) == Some(&1) => {
            let mut s = shape.to_vec();
            s.remove(axis);
            s
        }
        Reshape::Squeeze(_) => shape.to_vec(),
        // The rows are cut by the caller, who knows hw ([`patch_rows`]).
        Reshape::PatchRows => shape.to_vec(),
    }
}

/// The last `hw` rows of a per-token table ([1, N, 1, hd] or [N, hd], `element` bytes per
/// value), as ([hw, hd], bytes); `None` when the shape is not such a table.
pub fn patch_rows(
    shape: &[usize],
    bytes: &[u8],
    element: usize,
    hw: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let (n, hd) = match shape {
        [1, n, 1, hd] | [n, hd] => (*n, *hd),
        _ => return None,
    };
    if hw > n || bytes.len() != n * hd * element {
        return None;
    }
    Some((vec![hw, hd], bytes[(n - hw) * hd * element..].to_vec()))
}

/// Concatenates pieces ([.., d_k], same leading dims) along the last axis.
pub fn concat_last(
    pieces: &[(Vec<usize>, Vec<u8>)],
    element: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let first = &pieces.first()?.0;
    let lead = &first[..first.len().checked_sub(1)?];
    if pieces
        .iter()
        .any(|(s, _)| s.len() != first.len() || &s[..lead.len()] != lead)
    {
        return None;
    }
    let rows: usize = lead.iter().product();
    let widths: Vec<usize> = pieces
        .iter()
        .map(|(s, _)| s[lead.len()] * element)
        .collect();
    let mut bytes = Vec::with_capacity(rows * widths.iter().sum::<usize>());
    for r in 0..rows {
        for ((_, b), w) in pieces.iter().zip(&widths) {
            bytes.extend_from_slice(&b[r * w..(r + 1) * w]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(widths.iter().sum::<usize>() / element);
    Some((shape, bytes))
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
