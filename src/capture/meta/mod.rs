//! `dinodiff capture meta` (feature `torch`): Meta's DINOv3 from its checkpoint, run natively in
//! libtorch, every canonical stage streamed into a dump.
//!
//! Contract:
//! - the checkpoint (a `.pth` read by [`crate::checkpoint`], or by libtorch with
//!   `--loader libtorch`; safetensors; a transformers directory) becomes Meta's weights in
//!   [`weights`], zero-copy where it can ([`tensors`]), and is checked strictly
//!   ([`crate::model::checkpoint`]): one error lists every missing, unexpected and mis-shaped key.
//!   Without `--variant` the architecture is read off the shapes; with it, a checkpoint of another
//!   architecture is refused with what the checkpoint looks like;
//! - what was read is recorded in the manifest (`meta.checkpoint`) and said on one stderr line
//!   ([`MetaCapture::checkpoint`]); the file's sha256 is computed by a thread while the capture
//!   runs and recorded with its size, along with the libtorch version, device, dtype, thread
//!   count, variant and the input's hash;
//! - the weights are streamed one block at a time (or all materialized first with
//!   `--weights-in-memory`, same bytes), and what that holds at once is estimated and checked
//!   against `--max-memory` before the forward ([`residency`]); the manifest records the plan
//!   (`meta.weights`);
//! - stages are written by a second thread while the forward runs (bounded queue), in execution
//!   order; the dump appears only when complete ([`crate::dump::DumpWriter`]);
//! - on CPU, two captures of the same input with the same thread count write identical tensors.

pub mod forward;
mod hf;
pub mod residency;
pub mod tensors;
pub mod weights;

use super::Precision;
use super::input::{InputSource, ModelInput};
use crate::dump::{DumpWriter, FileIdentity, Manifest, SourceKind, TensorRecord, WrittenDump};
use crate::model::checkpoint::{self, Shapes};
use crate::model::{Architecture, BlockStage, Stage, Variant};
use anyhow::{Context, Result, bail};
use forward::{MetaVit, Placement};
use residency::{MemoryPlan, Residency};
use safetensors::Dtype;
use serde_json::json;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// The libtorch version this binary was built against (from the torch wheel's version.py).
pub const LIBTORCH_VERSION: &str = env!("DINODIFF_LIBTORCH_VERSION");

pub struct MetaOptions {
    pub weights: PathBuf,
    /// `--key`: where the state dict is inside a `.pth` ([`crate::checkpoint::Selection::key`]).
    pub key: Option<String>,
    pub loader: weights::Loader,
    pub variant: Option<String>,
    pub input: InputSource,
    pub output: PathBuf,
    pub device: String,
    pub precision: Precision,
    pub threads: Option<usize>,
    pub only: super::StageFilter,
    /// Streamed per block (the default) or every weight materialized first.
    pub residency: Residency,
    /// `--max-memory`, bytes; `None`: [`crate::capture::onnx::default_memory_budget`].
    pub max_memory: Option<u64>,
}

/// What a capture did, for the summary line.
pub struct MetaCapture {
    pub written: WrittenDump,
    pub variant: String,
    /// What was read from the checkpoint, one line ([`weights::Weights::summary`]).
    pub checkpoint: String,
    pub threads: i32,
    pub load: Duration,
    /// Wall time of the forward with the stages streamed out.
    pub forward: Duration,
    pub finish: Duration,
    /// What the weights took at once, estimated before the forward.
    pub memory: MemoryPlan,
}

fn parse_device(spec: &str) -> Result<Device> {
    let cuda_index = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Some(0),
        s => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok()),
    };
    let Some(index) = cuda_index else {
        bail!("--device {spec:?}: expected cpu, cuda or cuda:N");
    };
    if !tch::Cuda::is_available() {
        bail!(
            "--device {spec}: libtorch finds no CUDA device on this machine (no GPU, no driver, or \
             a CPU-only libtorch). Use --device cpu"
        );
    }
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        bail!("--device {spec}: this machine has {count} CUDA device(s), numbered from 0");
    }
    Ok(Device::Cuda(index))
}

fn kind_of(p: Precision) -> Kind {
    match p {
        Precision::F32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::F16 => Kind::Half,
    }
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Double => Dtype::F64,
        other => bail!("no dump dtype for libtorch kind {other:?}"),
    })
}

/// Picks the architecture: inferred, or the requested variant's when the checkpoint agrees.
fn resolve_architecture(
    path: &std::path::Path,
    shapes: &Shapes,
    requested: Option<&Variant>,
) -> Result<(Architecture, String)> {
    let shown = path.display();
    let inferred = Architecture::infer(shapes);
    let arch = match (requested, &inferred) {
        (None, Ok(arch)) => *arch,
        (None, Err(why)) => bail!(
            "cannot tell which DINOv3 {shown} holds: {why}. Is it a DINOv3 ViT backbone \
             checkpoint with Meta's key names (cls_token, blocks.0.attn.qkv.weight, ...)?"
        ),
        (Some(v), _) => {
            let wanted = v.arch;
            if let Ok(found) = &inferred {
                let found_plain = Architecture {
                    local_cls_norm: false,
                    ..*found
                };
                if found_plain != wanted {
                    let name = Variant::of(found).map_or("no hub variant".to_string(), |h| {
                        format!("that is {}", h.name)
                    });
                    bail!(
                        "{shown} is not a {} checkpoint: it holds {found} ({name}), while {} is \
                         {wanted}. Omit --variant to run what the checkpoint holds",
                        v.name,
                        v.name
                    );
                }
            }
            wanted
        }
    };
    let problems = checkpoint::check(shapes, &arch);
    let name = Variant::of(&arch).map_or_else(|| "custom".to_string(), |v| v.name.to_string());
    if !problems.is_empty() {
        bail!("{shown} does not load strictly as DINOv3 {name} ({arch}): {problems}");
    }
    Ok((arch, name))
}

fn check_input(input: &ModelInput, arch: &Architecture, from: &InputSource) -> Result<()> {
    let [_, c, h, w] = input.shape;
    let p = arch.patch_size;
    if c != arch.in_chans || h == 0 || w == 0 || h % p != 0 || w % p != 0 {
        let what = match from {
            InputSource::Dump(path) => format!("the input {}", path.display()),
            InputSource::Image { path, .. } => {
                format!("the input prepared from {}", path.display())
            }
        };
        bail!(
            "{what} is {:?}, but the model takes [1, {}, H, W] with H and W multiples of its \
             patch size {p}; prepare it with `dinodiff prep --size 224`",
            input.shape,
            arch.in_chans
        );
    }
    Ok(())
}

type Stream = (String, TensorRecord, Tensor);

/// Stages queued for the writer thread at most (the forward waits when it is full).
const STAGE_QUEUE: usize = 32;

/// Drains the queue into the dump: each tensor is made contiguous on the CPU and its bytes written.
fn write_stages(mut writer: DumpWriter, queue: mpsc::Receiver<Stream>) -> Result<DumpWriter> {
    for (name, record, tensor) in queue {
        let tensor = tensor
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_contiguous())
            .with_context(|| format!("copying stage {name} to the CPU"))?;
        let dtype = dtype_of(tensor.kind())?;
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        let len = tensor.numel() * tensor.kind().elt_size_in_bytes();
        let bytes: &[u8] = if len == 0 {
            &[] // an empty tensor's data pointer may be null, which no slice may hold
        } else {
            // SAFETY: `tensor` is a contiguous CPU tensor that lives until the end of this
            // iteration; its storage holds exactly `numel * element size` (> 0) bytes from
            // `data_ptr`, which is therefore not null.
            unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const u8, len) }
        };
        writer.write(&name, record, dtype, &shape, bytes)?;
    }
    Ok(writer)
}

#[cfg(not(target_endian = "little"))]
compile_error!("dump tensors are little-endian; the meta capture copies libtorch's native bytes");

/// The checkpoint's size and sha256, computed by a thread while the capture runs.
type Hashing = std::thread::JoinHandle<std::io::Result<FileIdentity>>;

/// A loaded model with what the manifest records of it.
struct Loaded {
    model: MetaVit,
    arch: Architecture,
    variant: String,
    facts: serde_json::Value,
    summary: String,
    memory: MemoryPlan,
    hashing: Hashing,
    hashed: PathBuf,
}

pub fn capture(opts: &MetaOptions) -> Result<MetaCapture> {
    let device = parse_device(&opts.device)?;
    let requested = opts.variant.as_deref().map(Variant::lookup).transpose()?;
    if let Some(n) = opts.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n as i32);
    }
    let threads = tch::get_num_threads();
    let kind = kind_of(opts.precision);
    let input = opts.input.load()?;

    let started = Instant::now();
    let loaded = load_model(opts, requested.as_ref(), &input, kind, device)?;
    let load = started.elapsed();

    let manifest = meta_manifest(opts, &loaded, &input, device, threads);
    let names: Vec<String> = Stage::all(loaded.arch.depth)
        .iter()
        .map(Stage::to_string)
        .collect();
    opts.only.check_matches(
        names.iter().map(String::as_str),
        &format!("DINOv3 {}", loaded.variant),
    )?;
    let stages = names.iter().filter(|s| opts.only.keeps(s)).count();
    let mut writer = DumpWriter::create_for(&opts.output, manifest, stages)?;
    writer.write(
        crate::model::INPUT_NAME,
        TensorRecord::of_stage(Stage::INPUT, crate::model::INPUT_NAME),
        Dtype::F32,
        &input.shape,
        &input.bytes(),
    )?;

    let forward_started = Instant::now();
    let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
    let x = Tensor::f_from_slice(&input.data)?
        .f_reshape(&shape)?
        .f_to_device(device)?
        .f_to_kind(kind)?;
    let mut writer = run_forward(&loaded, &x, writer, &opts.only)?;
    let forward = forward_started.elapsed();
    let finish_started = Instant::now();
    let identity = loaded
        .hashing
        .join()
        .expect("the hashing thread does not panic")
        .with_context(|| format!("hashing the checkpoint {}", loaded.hashed.display()))?;
    writer.set_model(identity);
    let written = writer.finish()?;
    Ok(MetaCapture {
        written,
        variant: loaded.variant,
        checkpoint: loaded.summary,
        threads,
        load,
        forward,
        finish: finish_started.elapsed(),
        memory: loaded.memory,
    })
}

/// Loads the checkpoint (hashing it meanwhile, until the dump is finished), resolves and checks
/// its architecture and the input against it, and only then builds the model on `device` in `kind`.
fn load_model(
    opts: &MetaOptions,
    requested: Option<&Variant>,
    input: &ModelInput,
    kind: Kind,
    device: Device,
) -> Result<Loaded> {
    let located = weights::locate(&opts.weights)?;
    let w = weights::load(&located, opts.key.as_deref(), opts.loader)?;
    // Hash while the capture runs: the hash reads the file through the page cache.
    let hashed = w.file.clone();
    let hashing = {
        let path = hashed.clone();
        std::thread::spawn(move || FileIdentity::of_file(&path, |_| {}))
    };
    let shapes: Shapes = w.shapes();
    let (arch, variant) = resolve_architecture(&opts.weights, &shapes, requested)?;
    if let Some((name, t)) = w.tensors.iter().find(|(_, t)| !t.is_floating_point()) {
        bail!(
            "{}: tensor {name} is {:?}; every tensor of a DINOv3 checkpoint is floating point",
            opts.weights.display(),
            t.kind()
        );
    }
    check_input(input, &arch, &opts.input)?;
    let [_, _, h, wd] = input.shape;
    let tokens = 1 + arch.storage_tokens + (h / arch.patch_size) * (wd / arch.patch_size);
    let budget = opts
        .max_memory
        .unwrap_or_else(crate::capture::onnx::default_memory_budget);
    let memory = MemoryPlan::new(
        &arch,
        &w.tensors,
        kind,
        tokens,
        STAGE_QUEUE,
        opts.residency,
        budget,
    )?;
    let place = Placement {
        kind,
        device,
        residency: opts.residency,
        hints: w.hints,
    };
    let model = MetaVit::new(arch, w.tensors, place, w.backing)?;
    Ok(Loaded {
        model,
        arch,
        variant,
        facts: w.facts,
        summary: w.summary,
        memory,
        hashing,
        hashed,
    })
}

fn meta_manifest(
    opts: &MetaOptions,
    loaded: &Loaded,
    input: &ModelInput,
    device: Device,
    threads: i32,
) -> Manifest {
    let mut manifest = Manifest::for_this_process(SourceKind::Meta);
    manifest.variant = Some(loaded.variant.clone());
    manifest
        .frameworks
        .insert("libtorch".into(), LIBTORCH_VERSION.into());
    manifest.frameworks.insert("tch".into(), "0.26.0".into());
    manifest.device = Some(format!("{device:?}").to_lowercase());
    manifest.dtype = Some(opts.precision.name().into());
    manifest.input = Some(input.provenance.clone());
    manifest.extra.insert(
        "meta".into(),
        json!({
            "threads": threads,
            "architecture": loaded.arch.to_string(),
            "checkpoint": loaded.facts,
            "weights": loaded.memory,
            "forward": "DinoVisionTransformer eval forward_features, native libtorch (dinodiff)",
        }),
    );
    manifest
}

/// Runs the forward, streaming every kept stage to a writer thread; returns the writer.
fn run_forward(
    loaded: &Loaded,
    x: &Tensor,
    writer: DumpWriter,
    only: &crate::capture::StageFilter,
) -> Result<DumpWriter> {
    let (queue, stages) = mpsc::sync_channel::<Stream>(STAGE_QUEUE);
    let write_thread = std::thread::spawn(move || write_stages(writer, stages));
    let bar = crate::progress::count_bar(
        loaded.arch.depth as u64,
        match loaded.model.residency() {
            Residency::Streamed => "blocks (weights streamed)",
            Residency::InMemory => "blocks",
        },
    );
    let mut sink = |stage: Stage, native: String, t: &Tensor| -> Result<()> {
        if let Stage::Block(_, BlockStage::Output) = stage {
            bar.inc(1);
        }
        let name = stage.to_string();
        if !only.keeps(&name) {
            return Ok(());
        }
        let record = TensorRecord::of_stage(stage, native);
        queue
            .send((name, record, t.shallow_clone()))
            .map_err(|_| anyhow::anyhow!("the dump writer stopped"))
    };
    let ran = loaded.model.forward(x, &mut sink);
    drop(queue);
    bar.finish_and_clear();
    let writer = write_thread
        .join()
        .expect("the writer thread does not panic");
    // A writer error explains a failed send better than the send does.
    let writer = writer?;
    ran?;
    Ok(writer)
}
