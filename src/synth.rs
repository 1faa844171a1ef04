//! `dinodiff synth`: synthetic dumps shaped like a DINOv3 capture — every canonical stage of a
//! hub variant, with its real shape — for demos, tests and benchmarks of `diff`.
//!
//! Contract: the values are deterministic functions of (seed, stage, element): uniform in
//! [-1, 1). `--noise E` adds a second deterministic uniform field of amplitude E (seeded by
//! `--noise-seed`) to every stage but `input`, so the input hash of a pair stays equal.
//! `--input input.st` makes the `input` stage that prepared input (so the dumps carry its hash).
//! `--drift STAGE=A` adds, from STAGE on in execution order, a field of amplitude A growing by
//! 5% per stage: a controlled place where parity breaks. Nothing here pretends to be a model.

use crate::dump::{DumpWriter, Manifest, SourceKind, TensorRecord, WrittenDump};
use crate::model::{Stage, Variant};
use anyhow::{Result, bail};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use safetensors::Dtype;
use serde_json::json;
use std::path::Path;

const CHUNK: usize = 64 * 1024;

pub struct SynthOptions {
    pub variant: Variant,
    pub image_size: usize,
    pub seed: u64,
    pub noise: f32,
    pub noise_seed: u64,
    /// (stage name, amplitude); a name that is not a stage of the variant is refused.
    pub drift: Option<(String, f32)>,
    /// Use this input (e.g. from `prep`) as the `input` stage instead of a random one.
    pub input: Option<crate::capture::input::ModelInput>,
    /// Where `input` was read from (for messages).
    pub input_path: Option<std::path::PathBuf>,
}

fn field(seed: u64, stage: usize, amplitude: f32, out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ ((stage as u64) << 32) ^ (c as u64) << 8);
            for v in chunk.iter_mut() {
                *v += amplitude * rng.random_range(-1.0f32..1.0);
            }
        });
}

pub fn synth(opts: &SynthOptions, out: &Path) -> Result<WrittenDump> {
    let v = &opts.variant;
    let stages = Stage::all(v.arch.depth);
    let drift_from = match &opts.drift {
        Some((name, _)) => match stages.iter().position(|s| s.to_string() == *name) {
            Some(i) => Some(i),
            None => bail!(
                "--drift names {name:?}, which is not a stage of {} (depth {}); see docs/stages.md",
                v.name,
                v.arch.depth
            ),
        },
        None => None,
    };
    let grid = v.arch.grid(opts.image_size);
    if let Some(input) = &opts.input {
        let shape = Stage::INPUT.shape(&v.arch, grid);
        let from = opts
            .input_path
            .as_ref()
            .map_or("--input".into(), |p| p.display().to_string());
        if input.shape[..] != shape[..] {
            bail!(
                "{from} holds a {:?} input, but {} at --image-size {} takes {shape:?}; pass \
                 --image-size {}, or prepare the input with `dinodiff prep --size {}`",
                input.shape,
                v.name,
                opts.image_size,
                input.shape[3],
                opts.image_size
            );
        }
    }
    let mut manifest = Manifest::for_this_process(SourceKind::Other);
    manifest.input = opts.input.as_ref().map(|i| i.provenance.clone());
    manifest.variant = Some(v.name.to_string());
    manifest.dtype = Some("f32".into());
    manifest.extra.insert(
        "synthetic".into(),
        json!({
            "seed": opts.seed,
            "noise": opts.noise,
            "noise_seed": opts.noise_seed,
            "drift": opts.drift.as_ref().map(|(s, a)| json!({"stage": s, "amplitude": a})),
            "image_size": opts.image_size,
        }),
    );
    let mut w = DumpWriter::create_for(out, manifest, stages.len())?;
    let mut buf: Vec<f32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for (i, &stage) in stages.iter().enumerate() {
        let name = stage.to_string();
        let shape = stage.shape(&v.arch, grid);
        let n: usize = shape.iter().product();
        buf.clear();
        match &opts.input {
            Some(input) if stage == Stage::INPUT => {
                buf.extend_from_slice(&input.data);
            }
            _ => {
                buf.resize(n, 0.0);
                field(opts.seed, i, 1.0, &mut buf);
            }
        }
        if stage != Stage::INPUT && opts.noise > 0.0 {
            field(opts.noise_seed ^ 0x9e37_79b9, i, opts.noise, &mut buf);
        }
        if let (Some(from), Some((_, amp))) = (drift_from, &opts.drift)
            && i >= from
        {
            let grown = amp * 1.05f32.powi((i - from) as i32);
            field(opts.noise_seed ^ 0x7f4a_7c15, i, grown, &mut buf);
        }
        bytes.clear();
        bytes.extend(buf.iter().flat_map(|x| x.to_le_bytes()));
        w.write(
            &name,
            TensorRecord::of_stage(stage, name.clone()),
            Dtype::F32,
            &shape,
            &bytes,
        )?;
    }
    w.finish()
}
