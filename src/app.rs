//! Dispatch: turns parsed arguments into library calls, prints results, picks the exit code.

use crate::cli::{
    CaptureCommand, Cli, ColorChoice, Command, CompareArgs, DiffArgs, DiffFormat, InspectFormat,
    ListFormat, ReportArgs,
};
use anyhow::{Result, bail, ensure};
use dinodiff::capture::input::{self, InputSource};
use dinodiff::diff::{self, DiffOptions};
use dinodiff::dump::Dump;
use dinodiff::exit;
use dinodiff::figures;
use dinodiff::metrics::Tolerance;
use dinodiff::report::{self, Renderer};
use std::io::{IsTerminal, Write};

pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Diff(args) => run_diff(&args),
        Command::Align(args) => run_align(&args),
        Command::Report(args) => run_report(&args),
        Command::Inspect(args) => run_inspect(&args),
        Command::Prep(args) => {
            let source = InputSource::Image {
                path: args.image,
                transform: args.transform.into(),
                size: args.size,
            };
            let prepared = source.load()?;
            let written = input::write_input_dump(&prepared, &args.output)?;
            eprintln!(
                "wrote {} (input {:?}, sha256 {})",
                written.path.display(),
                prepared.shape,
                prepared.sha256
            );
            Ok(exit::WITHIN_TOLERANCE)
        }
        Command::Stages(args) => {
            let list = dinodiff::vocabulary::stages();
            print(&match args.format {
                ListFormat::Table => report::vocabulary::stages_table(&list),
                ListFormat::Json => json_text(&list),
            })?;
            Ok(exit::WITHIN_TOLERANCE)
        }
        Command::Variants(args) => {
            let list = dinodiff::vocabulary::variants();
            print(&match args.format {
                ListFormat::Table => report::vocabulary::variants_table(&list),
                ListFormat::Json => json_text(&list),
            })?;
            Ok(exit::WITHIN_TOLERANCE)
        }
        Command::Checkpoint(args) => run_checkpoint(&args),
        Command::Tools(args) => run_tools(&args),
        Command::Capture(CaptureCommand::Meta(args)) => run_capture_meta(args),
        Command::Capture(CaptureCommand::Onnx(args)) => run_capture_onnx(args),
        Command::Capture(CaptureCommand::Eqx(args)) => run_capture_eqx(args),
        Command::Synth(args) => {
            let drift = match &args.drift {
                None => None,
                Some(spec) => {
                    let Some((stage, amp)) = spec.split_once('=') else {
                        bail!("--drift {spec:?}: expected STAGE=AMPLITUDE, e.g. blocks.5.ls2=1e-3");
                    };
                    let amp: f32 = amp.parse().map_err(|_| {
                        anyhow::anyhow!("--drift {spec:?}: {amp:?} is not a number")
                    })?;
                    Some((stage.to_string(), amp))
                }
            };
            ensure!(
                args.image_size > 0 && args.image_size.is_multiple_of(16),
                "--image-size {} is not a positive multiple of 16",
                args.image_size
            );
            let opts = dinodiff::synth::SynthOptions {
                variant: dinodiff::model::Variant::lookup(&args.variant)?,
                image_size: args.image_size,
                seed: args.seed,
                noise: args.noise,
                noise_seed: args.noise_seed,
                drift,
                input: args
                    .input
                    .as_ref()
                    .map(|p| InputSource::Dump(p.clone()).load())
                    .transpose()?,
                input_path: args.input.clone(),
            };
            let written = dinodiff::synth::synth(&opts, &args.output)?;
            eprintln!(
                "wrote {} ({} tensors, {} bytes)",
                written.path.display(),
                written.tensors,
                written.bytes
            );
            Ok(exit::WITHIN_TOLERANCE)
        }
    }
}

fn run_inspect(args: &crate::cli::InspectArgs) -> Result<u8> {
    let dump = Dump::open(&args.dump)?;
    let inspection = dinodiff::inspect::inspect(&dump);
    let renderer: Box<dyn Renderer> = match args.format {
        InspectFormat::Table => Box::new(report::TableRenderer {
            style: report::TableStyle::default(),
        }),
        InspectFormat::Json => Box::new(report::JsonRenderer),
        InspectFormat::Markdown => Box::new(report::MarkdownRenderer),
    };
    print(&renderer.inspect(&inspection))?;
    Ok(exit::WITHIN_TOLERANCE)
}

/// `dinodiff checkpoint`: the state dict is the one whose keys Meta's DINOv3 infers from.
fn run_checkpoint(args: &crate::cli::CheckpointArgs) -> Result<u8> {
    let accept = |shapes: &dinodiff::checkpoint::Shapes| {
        dinodiff::model::Architecture::infer(shapes).is_ok()
    };
    let sd = dinodiff::checkpoint::open(
        &args.file,
        &dinodiff::checkpoint::Selection {
            key: args.key.as_deref(),
            accept: &accept,
        },
    )?;
    let listing = dinodiff::checkpoint::listing(&sd, args.format == ListFormat::Json);
    print(&match args.format {
        ListFormat::Table => report::checkpoint::table(&listing),
        ListFormat::Json => json_text(&listing),
    })?;
    Ok(exit::WITHIN_TOLERANCE)
}

/// The diff options of `diff` and `report`, checked.
/// `tokens`: the per-token-category breakdown of every pair (`diff --tokens`).
fn diff_options(args: &CompareArgs, tokens: bool) -> Result<DiffOptions> {
    ensure!(
        args.atol >= 0.0 && args.rtol >= 0.0 && args.atol.is_finite() && args.rtol.is_finite(),
        "--atol and --rtol must be finite and non-negative"
    );
    ensure!(
        (0.0..=1.0).contains(&args.min_coverage),
        "--min-coverage {} is not a fraction between 0 and 1",
        args.min_coverage
    );
    let map = match &args.map {
        Some(p) => dinodiff::align::NameMap::load(p)?,
        None => dinodiff::align::NameMap::default(),
    };
    Ok(DiffOptions {
        tolerance: Tolerance {
            atol: args.atol,
            rtol: args.rtol,
        },
        allow_input_mismatch: args.allow_input_mismatch,
        map,
        min_coverage: args.min_coverage,
        tokens,
        align: args.align.into(),
    })
}

/// A diff (two dumps) or a triangulation (three), computed once for every output.
enum Compared {
    Diff(Box<diff::DiffReport>),
    Triangle(Box<dinodiff::triangulate::TriangleReport>),
}

impl Compared {
    fn pass(&self) -> bool {
        match self {
            Compared::Diff(r) => r.verdict.pass,
            Compared::Triangle(t) => t.pass,
        }
    }

    fn render(&self, renderer: &dyn Renderer, options: &report::Options) -> String {
        match self {
            Compared::Diff(r) => renderer.diff(r, options),
            Compared::Triangle(t) => renderer.triangle(t, options),
        }
    }
}

fn compare(args: &CompareArgs, tokens: bool) -> Result<(Vec<Dump>, Compared)> {
    let opts = diff_options(args, tokens)?;
    let mut dumps = vec![Dump::open(&args.a)?, Dump::open(&args.b)?];
    if let Some(c) = &args.c {
        dumps.push(Dump::open(c)?);
    }
    let compared = match &dumps[..] {
        [a, b, c] => Compared::Triangle(Box::new(dinodiff::triangulate::triangulate(
            a, b, c, &opts,
        )?)),
        [a, b] => Compared::Diff(Box::new(diff::diff(a, b, &opts)?)),
        _ => unreachable!("two or three dumps"),
    };
    Ok((dumps, compared))
}

fn exit_code(pass: bool) -> u8 {
    if pass {
        exit::WITHIN_TOLERANCE
    } else {
        exit::OVER_TOLERANCE
    }
}

fn run_diff(args: &DiffArgs) -> Result<u8> {
    let (dumps, compared) = compare(&args.compare, args.tokens)?;
    if let Some(path) = &args.html {
        write_html(
            &dumps,
            &compared,
            &args.compare,
            args.stage.as_deref(),
            path,
        )?;
    }
    let options = report::Options {
        list_unmatched: args.compare.list_unmatched,
    };
    print(&compared.render(diff_renderer(args).as_ref(), &options))?;
    Ok(exit_code(compared.pass()))
}

fn run_report(args: &ReportArgs) -> Result<u8> {
    // The page's token figures come from crate::figures (with the patch maps), not from --tokens.
    let (dumps, compared) = compare(&args.compare, false)?;
    let bytes = write_html(
        &dumps,
        &compared,
        &args.compare,
        args.stage.as_deref(),
        &args.output,
    )?;
    eprintln!(
        "wrote {} ({} KiB): {}",
        args.output.display(),
        bytes.div_ceil(1024),
        if compared.pass() { "PASS" } else { "FAIL" }
    );
    Ok(exit_code(compared.pass()))
}

/// Computes the figures, renders the HTML page and writes it atomically; returns its size.
fn write_html(
    dumps: &[Dump],
    compared: &Compared,
    args: &CompareArgs,
    stage: Option<&str>,
    path: &std::path::Path,
) -> Result<usize> {
    let stage = stage
        .map(|s| {
            dinodiff::model::Stage::parse(s).ok_or_else(|| {
                anyhow::anyhow!(
                    "--stage {s:?} is not a canonical stage name (`dinodiff stages` lists them), \
                     e.g. blocks.5.ls2"
                )
            })
        })
        .transpose()?;
    let opts = figures::FigureOptions { stage };
    let figures = match (compared, dumps) {
        (Compared::Diff(r), [a, b]) => figures::for_diff(a, b, r, &opts)?,
        (Compared::Triangle(t), [a, b, c]) => figures::for_triangle([a, b, c], t, &opts)?,
        _ => unreachable!("a diff has two dumps, a triangle three"),
    };
    let renderer = report::HtmlRenderer {
        figures: Some(&figures),
    };
    let page = compared.render(
        &renderer,
        &report::Options {
            list_unmatched: args.list_unmatched,
        },
    );
    write_atomically(path, page.as_bytes(), "the report")?;
    Ok(page.len())
}

/// Writes a file beside its destination and renames it into place, readable like any file the
/// user writes; `what` names it in messages.
fn write_atomically(path: &std::path::Path, bytes: &[u8], what: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot write {what} {}: {e}", path.display());
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    // tempfile makes it 0600.
    use std::os::unix::fs::PermissionsExt;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `dinodiff align`: the pairing on stdout, the map file with `-o`.
fn run_align(args: &crate::cli::AlignArgs) -> Result<u8> {
    use dinodiff::align::proposal;
    let map = match &args.map {
        Some(p) => dinodiff::align::NameMap::load(p)?,
        None => dinodiff::align::NameMap::default(),
    };
    let (a, b) = (Dump::open(&args.a)?, Dump::open(&args.b)?);
    diff::check_inputs(&a, &b, args.allow_input_mismatch)?;
    let proposal = proposal::propose(&a, &b, &map)?;
    if let Some(path) = &args.output {
        let header = report::words::align_map_header(&proposal, &path.display().to_string());
        let text = proposal::map_text(&proposal, &map, &header, report::words::align_comment);
        write_atomically(path, text.as_bytes(), "the map file")?;
        eprintln!("wrote {}", path.display());
    }
    print(&match args.format {
        ListFormat::Table => report::align::table(&proposal),
        ListFormat::Json => json_text(&proposal),
    })?;
    Ok(exit::WITHIN_TOLERANCE)
}

fn json_text(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("vocabulary data serializes");
    text.push('\n');
    text
}

/// Columns the table may use when stdout is not a terminal and `--width` is not given.
const PIPED_WIDTH: usize = 100;

/// `--width`, else the terminal's columns, else [`PIPED_WIDTH`].
fn table_width(args: &DiffArgs, tty: bool) -> usize {
    let terminal = || {
        tty.then(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
            .flatten()
    };
    args.width
        .map(usize::from)
        .or_else(terminal)
        .unwrap_or(PIPED_WIDTH)
}

/// The renderer `--format` asks for; colour and width (table) follow the terminal.
fn diff_renderer(args: &DiffArgs) -> Box<dyn Renderer> {
    let tty = std::io::stdout().is_terminal();
    match args.format {
        DiffFormat::Table => Box::new(report::TableRenderer {
            style: report::TableStyle {
                color: match args.color {
                    ColorChoice::Always => true,
                    ColorChoice::Never => false,
                    ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none(),
                },
                width: Some(table_width(args, tty)),
            },
        }),
        DiffFormat::Json => Box::new(report::JsonRenderer),
        DiffFormat::Markdown => Box::new(report::MarkdownRenderer),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn input_source(input: &crate::cli::InputArgs, t: &crate::cli::ImageTransformArgs) -> InputSource {
    match (&input.input, &input.image) {
        (Some(dump), _) => InputSource::Dump(dump.clone()),
        (None, Some(image)) => InputSource::Image {
            path: image.clone(),
            transform: t.transform.into(),
            size: t.size,
        },
        (None, None) => unreachable!("the argument parser requires --input or --image"),
    }
}

#[cfg(feature = "torch")]
fn run_capture_meta(args: crate::cli::CaptureMetaArgs) -> Result<u8> {
    use dinodiff::capture::meta;
    let opts = meta::MetaOptions {
        input: input_source(&args.input, &args.transform),
        weights: args.weights,
        key: args.key,
        loader: match args.loader {
            crate::cli::LoaderArg::Dinodiff => meta::weights::Loader::Dinodiff,
            crate::cli::LoaderArg::Libtorch => meta::weights::Loader::Libtorch,
        },
        variant: args.variant,
        output: args.output,
        device: args.device,
        precision: args.dtype.into(),
        threads: args.threads,
        only: dinodiff::capture::StageFilter::new(&args.only)?,
        residency: if args.weights_in_memory {
            meta::residency::Residency::InMemory
        } else {
            meta::residency::Residency::Streamed
        },
        max_memory: args.max_memory,
    };
    let done = meta::capture(&opts)?;
    eprintln!("{}", done.checkpoint);
    eprintln!(
        "wrote {} ({} tensors, {} bytes): {} on {} with {} thread(s); load {:.3} s, forward + stream {:.3} s, finish {:.3} s",
        done.written.path.display(),
        done.written.tensors,
        done.written.bytes,
        done.variant,
        opts.device,
        done.threads,
        done.load.as_secs_f64(),
        done.forward.as_secs_f64(),
        done.finish.as_secs_f64()
    );
    let size = dinodiff::report::words::size_iec;
    let m = &done.memory;
    eprintln!(
        "weights {}: {} at once (one block {}, stem and head {}) + activations about {}, \
         budget {} (--max-memory)",
        m.residency,
        size(m.peak - m.activations),
        size(m.block_weights),
        size(m.resident_weights),
        size(m.activations),
        size(m.budget)
    );
    Ok(exit::WITHIN_TOLERANCE)
}

#[cfg(not(feature = "torch"))]
fn run_capture_meta(args: crate::cli::CaptureMetaArgs) -> Result<u8> {
    let _ = input_source(&args.input, &args.transform);
    bail!(
        "this dinodiff was built without the `torch` feature, so it cannot run Meta's model. \
         Rebuild with `cargo build --release --features torch` (libtorch comes from the \
         torch==2.13.0 wheel; `tools/dev setup` does all of it, see docs/capture-meta.md)"
    )
}

fn run_capture_onnx(args: crate::cli::CaptureOnnxArgs) -> Result<u8> {
    use dinodiff::capture::onnx;
    let opts = onnx::OnnxOptions {
        input: input_source(&args.input, &args.transform),
        model: args.model,
        output: args.output,
        only: dinodiff::capture::StageFilter::new(&args.only)?,
        opt_level: args.opt_level.into(),
        deploy_opt_level: args.deploy_opt_level.into(),
        threads: args.threads,
        ort_lib: args.ort_lib,
        input_name: args.input_name,
        max_memory: args.max_memory,
    };
    let done = onnx::capture(&opts)?;
    eprintln!(
        "wrote {} ({} tensors, {} bytes): {} values marked, {} function calls inlined, {} marked run{} {:.3} s; \
         final outputs {} the unmarked run's at the same level (ONNX Runtime from {})",
        done.written.path.display(),
        done.written.tensors,
        done.written.bytes,
        done.values,
        done.calls_inlined,
        done.runs,
        if done.runs == 1 { "" } else { "s" },
        done.run.as_secs_f64(),
        if done.observer_effect {
            "DIFFER from"
        } else {
            "bit-identical to"
        },
        done.runtime.display()
    );
    if let Some(e) = &done.optimizer_effect {
        let headline: Vec<String> = done
            .deployed_headline
            .iter()
            .map(ToString::to_string)
            .collect();
        eprintln!(
            "deployed run: {}; its headline ({}) is written as deployed/<stage>",
            dinodiff::report::words::optimizer_effect(e),
            if headline.is_empty() {
                "none found in the outputs".to_string()
            } else {
                headline.join(", ")
            }
        );
        let path = done.written.path.display().to_string();
        if let Some(finding) = dinodiff::report::words::optimizer_finding(&path, e) {
            eprintln!("{finding}");
        }
    }
    Ok(exit::WITHIN_TOLERANCE)
}

fn run_capture_eqx(args: crate::cli::CaptureEqxArgs) -> Result<u8> {
    use dinodiff::capture::eqx;
    let kind = match args.kind {
        crate::cli::EqxKindArg::Jax2onnx => eqx::RecorderKind::Jax2onnx,
        crate::cli::EqxKindArg::Equimo => eqx::RecorderKind::Equimo,
    };
    let recorded_from = args.model.is_some() || args.checkpoint.is_some();
    let done = match (recorded_from, args.npz, args.input) {
        (true, _, Some(input)) => {
            let opts = eqx::RecordOptions {
                kind,
                model: args.model,
                checkpoint: args.checkpoint,
                input,
                output: args.output,
                python: args.python,
                variant: args.variant,
                config: args.config,
                keep_npz: args.keep_npz,
            };
            eqx::record_and_import(&opts, |python, probe, resolved| {
                eprintln!("{}", report::words::eqx_recording(python, probe, resolved));
            })?
            .import
        }
        (false, Some(npz), input) => eqx::import(&eqx::EqxOptions {
            npz,
            output: args.output,
            input,
        })?,
        _ => bail!(
            "give --model M.eqx --input input.st (equimo: --kind equimo --checkpoint META.pth \
             --input input.st), or --npz RUN.npz"
        ),
    };
    eprintln!(
        "wrote {} ({} tensors, {} bytes): {} arrays named as canonical stages{}",
        done.written.path.display(),
        done.written.tensors,
        done.written.bytes,
        done.recognized,
        if done.derived.is_empty() {
            String::new()
        } else {
            format!("; derived from norm: {}", done.derived.join(", "))
        }
    );
    Ok(exit::WITHIN_TOLERANCE)
}

/// `dinodiff tools`: the list, or one tool written out (stdout, or a file made executable).
fn run_tools(args: &crate::cli::ToolsArgs) -> Result<u8> {
    use dinodiff::pytools::{Tool, bundle};
    let Some(name) = &args.name else {
        print(&report::vocabulary::tools_table(Tool::all()))?;
        return Ok(exit::WITHIN_TOLERANCE);
    };
    let text = bundle::render(Tool::named(name)?);
    match &args.output {
        None => print(&text)?,
        Some(path) => {
            dinodiff::pytools::write_script(path, &text)?;
            eprintln!("wrote {} ({} bytes)", path.display(), text.len());
        }
    }
    Ok(exit::WITHIN_TOLERANCE)
}
