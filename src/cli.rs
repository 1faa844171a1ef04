//! Command-line definitions (clap derive), and the mapping of their value enums onto the library's
//! types; `app` turns them into work. Part of the binary: the library does not use clap.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dinodiff::metrics::Tolerance;
use std::path::PathBuf;

/// Find where numerical parity breaks between implementations of the same neural network.
///
/// Exit codes: 0 = done (diff: within tolerance), 1 = diff found tensors over tolerance,
/// 2 = error (nothing was written).
#[derive(Parser, Debug)]
#[command(name = "dinodiff", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compare two dumps: headline cosine / max|Δ|, a per-stage table, the first stage over tolerance
    Diff(DiffArgs),
    /// Pair two dumps' tensors by name, then by value (layouts reconciled); print the pairing and
    /// write it as a map file that `diff --map` reuses (docs/alignment.md)
    Align(AlignArgs),
    /// Write an HTML report of a diff or triangulation: heatmaps, depth curves, token breakdowns,
    /// patch-grid error maps over the input image, the diagnosis and each dump's provenance
    Report(ReportArgs),
    /// Show a dump's manifest and per-tensor statistics in execution order
    Inspect(InspectArgs),
    /// Prepare the model input from an image: the `input.st` every capture consumes
    Prep(PrepArgs),
    /// Capture every intermediate tensor of one run into a dump
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Write a synthetic DINOv3-shaped dump (demos, tests, benchmarks of diff)
    Synth(SynthArgs),
    /// List the canonical stage names, their shapes and table places (docs/stages.md)
    Stages(VocabularyArgs),
    /// List the DINOv3 hub variants and their dimensions
    Variants(VocabularyArgs),
    /// Read a torch.save checkpoint without libtorch: where its state dict is, and every tensor
    Checkpoint(CheckpointArgs),
    /// List the Python helpers embedded in this binary, or write one out as a self-contained
    /// script (for a machine with JAX or torch but no dinodiff)
    Tools(ToolsArgs),
}

#[derive(Args, Debug)]
pub struct ToolsArgs {
    /// The helper to write out (`dinodiff tools` lists them), e.g. eqx-capture
    pub name: Option<String>,
    /// Write it to this file (made executable) instead of stdout
    #[arg(short, long, requires = "name")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// A .pth file written by torch.save (torch >= 1.6)
    pub file: PathBuf,
    /// Where the state dict is: dict keys from the root, then a name prefix to strip
    /// (e.g. `teacher.backbone`, `model`, `module`; '' = the root dict)
    #[arg(long)]
    pub key: Option<String>,
    /// json adds the sha256 of each tensor's row-major little-endian values
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Args, Debug)]
pub struct VocabularyArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

/// `--transform`: how an image becomes the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransformArg {
    Meta,
    Square,
    None,
}

impl From<TransformArg> for dinodiff::capture::input::Transform {
    fn from(t: TransformArg) -> Self {
        use dinodiff::capture::input::Transform;
        match t {
            TransformArg::Meta => Transform::Meta,
            TransformArg::Square => Transform::Square,
            TransformArg::None => Transform::None,
        }
    }
}

/// `--dtype` of `capture meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
    F16,
}

impl From<PrecisionArg> for dinodiff::capture::Precision {
    fn from(p: PrecisionArg) -> Self {
        use dinodiff::capture::Precision;
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

/// `--loader` of `capture meta`: who reads a `.pth` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoaderArg {
    /// dinodiff's reader: containers, prefixes, an allow-list of globals, zero-copy
    Dinodiff,
    /// libtorch's loader: a plain dict of tensors only, copied (a fallback, and the baseline)
    Libtorch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// What `diff` and `report` compare, and how.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The reference dump (A)
    pub a: PathBuf,
    /// The dump compared against it (B)
    pub b: PathBuf,
    /// A third dump: triangulation of A (the reference, e.g. Meta), B (a port of it, e.g.
    /// Equinox) and C (an export of the port, e.g. its ONNX file)
    pub c: Option<PathBuf>,
    /// Absolute tolerance: a position fails when |a-b| > atol + rtol * max(|a|, |b|)
    #[arg(long, default_value_t = Tolerance::DEFAULT.atol)]
    pub atol: f64,
    /// Relative tolerance (see --atol)
    #[arg(long, default_value_t = Tolerance::DEFAULT.rtol)]
    pub rtol: f64,
    /// Name map (TOML: [pairs] and [[rewrite]] rules; see docs/alignment.md)
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// Compare dumps whose manifests record different input hashes
    #[arg(long)]
    pub allow_input_mismatch: bool,
    /// Below this coverage (0..1: paired share of the canonical stages either dump has, or of the
    /// smaller dump's tensors when neither has any) the verdict is INCOMPLETE, exit 1
    #[arg(long, default_value_t = dinodiff::diff::DEFAULT_MIN_COVERAGE, value_name = "FRACTION")]
    pub min_coverage: f64,
    /// List the tensors that found no partner
    #[arg(long)]
    pub list_unmatched: bool,
    /// How tensors are paired: by name (and --map) only, or auto = by name, then the rest by
    /// value, B read through the layout that matches (see `dinodiff align`)
    #[arg(long, value_enum, default_value_t = AlignArg::Names)]
    pub align: AlignArg,
}

/// `--align`: how `diff` pairs tensors (maps onto [`dinodiff::align::Mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlignArg {
    Names,
    Auto,
}

impl From<AlignArg> for dinodiff::align::Mode {
    fn from(a: AlignArg) -> Self {
        match a {
            AlignArg::Names => Self::Names,
            AlignArg::Auto => Self::Auto,
        }
    }
}

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// The reference dump (A)
    pub a: PathBuf,
    /// The dump whose tensors are paired with A's (B)
    pub b: PathBuf,
    /// Write the pairing as a map file (TOML: [[pair]] with layouts, reviewable; `diff --map`
    /// reproduces it without searching again)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A map file whose pairs and rewrite rules come first (see docs/alignment.md)
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Pair dumps whose manifests record different input hashes
    #[arg(long)]
    pub allow_input_mismatch: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub compare: CompareArgs,
    #[arg(long, value_enum, default_value_t = DiffFormat::Table)]
    pub format: DiffFormat,
    /// Colour cells over tolerance (table format); auto = when stdout is a terminal and NO_COLOR is unset
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Also break each stage's difference down by token category (CLS / storage / patches:
    /// max|Δ| and rms)
    #[arg(long)]
    pub tokens: bool,
    /// Fit the tables to N columns (table format); default: the terminal's width, 100 when
    /// stdout is not a terminal
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(40..))]
    pub width: Option<u16>,
    /// Also write the HTML report (as `dinodiff report` does) to this file, e.g. beside the
    /// Markdown summary of a CI job
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// The stage of the HTML report's patch maps (see `dinodiff report --help`)
    #[arg(long, value_name = "STAGE", requires = "html")]
    pub stage: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub compare: CompareArgs,
    /// The HTML file to write (one self-contained page, no network needed to view it)
    #[arg(short, long)]
    pub output: PathBuf,
    /// The stage of the patch maps (default: the first stage over tolerance with a token axis,
    /// else the one with the largest max|Δ|)
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub dump: PathBuf,
    #[arg(long, value_enum, default_value_t = InspectFormat::Table)]
    pub format: InspectFormat,
}

#[derive(Args, Debug)]
pub struct PrepArgs {
    /// A JPEG or PNG image
    #[arg(long)]
    pub image: PathBuf,
    /// meta = Meta's eval transform; square = center square crop then resize; none = as is
    #[arg(long, value_enum, default_value_t = TransformArg::Meta)]
    pub transform: TransformArg,
    /// Side of the square model input, a multiple of 16
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// The input dump to write
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Where a capture takes its input from: a prepared dump, or an image prepared on the fly.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false, id = "input_source")]
pub struct InputArgs {
    /// An input dump made by `dinodiff prep`
    #[arg(long, group = "input_source")]
    pub input: Option<PathBuf>,
    /// An image to prepare as `dinodiff prep` would
    #[arg(long, group = "input_source")]
    pub image: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ImageTransformArgs {
    /// Transform for --image (see `dinodiff prep --help`)
    #[arg(long, value_enum, default_value_t = TransformArg::Meta)]
    pub transform: TransformArg,
    /// Input size for --image
    #[arg(long, default_value_t = 224)]
    pub size: usize,
}

#[derive(Subcommand, Debug)]
pub enum CaptureCommand {
    /// Meta's DINOv3 from its .pth checkpoint, natively in libtorch (needs the `torch` feature)
    Meta(CaptureMetaArgs),
    /// Any ONNX model through ONNX Runtime: every intermediate value, inside local functions too
    Onnx(CaptureOnnxArgs),
    /// An Equinox / JAX DINOv3: recorded with your Python (--model), or a recording made
    /// elsewhere by `dinodiff tools eqx-capture` (--npz), imported into a dump
    Eqx(CaptureEqxArgs),
}

#[derive(Args, Debug)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("eqx_source").required(true).args(["model", "npz", "checkpoint"]))]
pub struct CaptureEqxArgs {
    /// Which Equinox DINOv3 --model / --checkpoint is: jax2onnx's example model, or equimo 2.x's
    /// (`equimo.vision.models`, needs a Python >= 3.12 with equimo: `tools/dev equimo-venv`)
    #[arg(long, value_enum, default_value = "jax2onnx")]
    pub kind: EqxKindArg,
    /// With --kind equimo: a Meta DINOv3 checkpoint (.pth), converted by equimo's own converter
    #[arg(long, value_name = "META.pth", requires = "input", conflicts_with_all = ["model", "npz"])]
    pub checkpoint: Option<PathBuf>,
    /// The Equinox model to run: a .eqx of jax2onnx's DINOv3 example (eqx.tree_serialise_leaves),
    /// with or without the sidecar M.eqx.json that `dinodiff tools meta-to-eqx` writes; with
    /// --kind equimo, a model saved by equimo's save_model
    #[arg(long, value_name = "M.eqx", requires = "input")]
    pub model: Option<PathBuf>,
    /// A recording made on another machine by `python eqx_capture.py --model M.eqx --input
    /// input.st -o run.npz` (`dinodiff tools eqx-capture` writes that script)
    #[arg(long, value_name = "RUN.npz")]
    pub npz: Option<PathBuf>,
    /// The dump to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// The input dump (`dinodiff prep`): what --model runs on; with --npz, the recording must
    /// have been made on it (refused otherwise)
    #[arg(long, value_name = "INPUT.st")]
    pub input: Option<PathBuf>,
    /// The DINOv3 variant a bare .eqx holds: vits16, vitb16, vitl16, or Meta's and jax2onnx's
    /// names (dinov3_vits16_pretrain_lvd1689m); inferred from the file when omitted
    #[arg(long, conflicts_with_all = ["config", "npz"])]
    pub variant: Option<String>,
    /// The constructor config of a bare .eqx, keys as jax2onnx's VisionTransformer takes them:
    /// img_size=224,patch_size=16,embed_dim=384,depth=12,num_heads=6,num_storage_tokens=4 (keys
    /// left out are read off the file)
    #[arg(long, value_name = "KEY=VALUE,...", requires = "model")]
    pub config: Option<String>,
    /// The Python that runs the recorder (it needs jax, equinox, jax2onnx, numpy, safetensors;
    /// equimo: Python >= 3.12 with equimo, torch, timm); default: $DINODIFF_PYTHON, else python3
    #[arg(long, value_name = "PATH", conflicts_with = "npz")]
    pub python: Option<PathBuf>,
    /// Keep the recording (.npz) at this path; by default it is a temporary file
    #[arg(long, value_name = "RUN.npz", conflicts_with = "npz")]
    pub keep_npz: Option<PathBuf>,
}

/// `capture eqx --kind`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum EqxKindArg {
    Jax2onnx,
    Equimo,
}

#[derive(Args, Debug)]
pub struct CaptureOnnxArgs {
    /// The ONNX model (external data files beside it are found)
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub transform: ImageTransformArgs,
    /// The dump to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// Keep only the values whose name matches one of these regexes (the model's outputs and
    /// `input` are always kept)
    #[arg(long, value_name = "REGEX", num_args = 1..)]
    pub only: Vec<String>,
    /// ONNX Runtime graph optimizations for the marked runs, whose values are captured
    /// (`disable`: the graph as exported)
    #[arg(long, value_enum, default_value_t = OptLevel::Disable)]
    pub opt_level: OptLevel,
    /// ONNX Runtime graph optimizations for the deployed run (the model unmarked, as users run
    /// it): the headline comes from it, and its difference from the graph as exported is
    /// reported as the optimizer effect (`all` is ONNX Runtime's default)
    #[arg(long, value_enum, default_value_t = OptLevel::All)]
    pub deploy_opt_level: OptLevel,
    /// ONNX Runtime intra-op threads (default: ONNX Runtime's)
    #[arg(long)]
    pub threads: Option<usize>,
    /// libonnxruntime.so to load (else ORT_DYLIB_PATH, else the Python onnxruntime package)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// The model input that receives the image (default: the model's only input)
    #[arg(long, value_name = "NAME")]
    pub input_name: Option<String>,
    /// Memory budget for the values one run holds, e.g. 2GiB or 512MB; when every value does not
    /// fit, the capture takes several runs, each marking a consecutive part of the graph
    /// (default: half of the memory available at start)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
}

/// `--opt-level`: ONNX Runtime graph optimizations (maps onto
/// [`dinodiff::capture::onnx::OptLevel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl From<OptLevel> for dinodiff::capture::onnx::OptLevel {
    fn from(level: OptLevel) -> Self {
        match level {
            OptLevel::Disable => Self::Disable,
            OptLevel::Basic => Self::Basic,
            OptLevel::Extended => Self::Extended,
            OptLevel::All => Self::All,
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (write a size such as 512MiB, 2GB or 1.5GiB)"))
}

#[derive(Args, Debug)]
pub struct CaptureMetaArgs {
    /// The checkpoint: a torch.save .pth (a state dict, or a training checkpoint holding one),
    /// a .safetensors with Meta's names, or a transformers DINOv3 directory (save_pretrained)
    #[arg(long)]
    pub weights: PathBuf,
    /// Where the state dict is inside a .pth: dict keys from the root, then a name prefix to
    /// strip (e.g. `teacher`, `model_ema`, `module`); found automatically when unambiguous
    #[arg(long)]
    pub key: Option<String>,
    /// Who reads a .pth file
    #[arg(long, value_enum, default_value_t = LoaderArg::Dinodiff)]
    pub loader: LoaderArg,
    /// Variant (vits16, ..., or Meta's full name); inferred from the checkpoint when omitted
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub transform: ImageTransformArgs,
    /// The dump to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype of weights and activations (RoPE stays f32, as in Meta's hub configs)
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub dtype: PrecisionArg,
    /// libtorch intra-op threads (default: libtorch's, one per physical core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep only the stages whose name matches one of these regexes (`input` is always kept)
    #[arg(long, value_name = "REGEX", num_args = 1..)]
    pub only: Vec<String>,
    /// Memory budget for the weights held at once (in the compute dtype) and the activations,
    /// e.g. 4GiB; refused before the forward when one block does not fit (default: half of the
    /// memory available at start)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Materialize every block's weights before the forward, instead of streaming them one block
    /// at a time (same results, more memory; for comparison)
    #[arg(long)]
    pub weights_in_memory: bool,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// DINOv3 variant whose stage shapes to use (vits16 ... vit7b16)
    #[arg(long, default_value = "vits16")]
    pub variant: String,
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Amplitude of a uniform noise field added to every stage but `input`
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    #[arg(long, default_value_t = 1)]
    pub noise_seed: u64,
    /// STAGE=AMPLITUDE: drift starting at STAGE, growing 5% per stage after it
    #[arg(long, value_name = "STAGE=AMPLITUDE")]
    pub drift: Option<String>,
    /// Use this input dump (from `dinodiff prep`) as the `input` stage
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(short, long)]
    pub output: PathBuf,
}
