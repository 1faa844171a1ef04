//! The terminal table fits its width: snapshots at 80, 100 and 120 columns (`--width`) of ViT-S
//! and ViT-L shaped diffs and of a triangle, every line checked against the width; `--tokens`
//! and the markdown summary; and the real thing in a tmux pane of a given size.

use crate::common::{dinodiff, dinodiff_bin, run_in};
use dinodiff::report::table::display_width;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WIDTHS: [usize; 3] = [80, 100, 120];

fn synth(dir: &Path, variant: &str, extra: &[&str], out: &str) {
    dinodiff()
        .current_dir(dir)
        .args(["synth", "--variant", variant, "--image-size", "32"])
        .args(extra)
        .args(["-o", out])
        .assert()
        .code(0);
}

/// a.st; b.st drifting from `drift` on with noise; c.st = b.st's drift plus 1e-6 noise (a port
/// that diverges at `drift`, an export that follows the port).
fn dumps(variant: &str, drift: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, variant, &[], "a.st");
    synth(d, variant, &["--drift", drift], "b.st");
    synth(d, variant, &["--drift", drift, "--noise", "1e-6"], "c.st");
    dir
}

/// Every line fits `width` columns (display width, so `⇔`, `Δ` and the glyphs count once).
fn assert_fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            display_width(line) <= width,
            "a line of {} columns in a {width}-column table:\n{line}\n\n{text}",
            display_width(line)
        );
    }
}

fn snapshots_at_each_width(variant: &str, drift: &str, name: &str, files: &[&str]) {
    let dir = dumps(variant, drift);
    for width in WIDTHS {
        let w = width.to_string();
        let mut args = vec!["diff"];
        args.extend_from_slice(files);
        args.extend(["--width", &w]);
        let out = run_in(dir.path(), &args, 1);
        assert_fits(&fitted_lines(&out), width);
        insta::assert_snapshot!(format!("{name}_{width}"), out);
    }
}

/// The lines the renderer fits: everything but the sentences (the dumps, the input, the notes
/// on the first and worst pairs, verdicts, the diagnosis), which the terminal wraps like prose.
fn fitted_lines(text: &str) -> String {
    const NOTES: [&str; 4] = [
        "first over tolerance:",
        "worst:",
        "largest difference:",
        "first and worst",
    ];
    let mut in_note = false;
    let mut kept = Vec::new();
    for line in text.lines() {
        if NOTES.iter().any(|n| line.starts_with(n)) {
            in_note = true;
            continue;
        }
        if in_note && line.starts_with("  ") {
            continue;
        }
        in_note = false;
        let sentence = ["A: ", "B: ", "C: ", "input: ", "diagnosis: "]
            .iter()
            .any(|p| line.starts_with(p))
            || line.contains("verdict: ");
        if !sentence {
            kept.push(line);
        }
    }
    kept.join("\n")
}

#[test]
fn vit_s_diff_fits_80_100_and_120_columns() {
    snapshots_at_each_width("vits16", "blocks.7.ls2=1e-3", "vits", &["a.st", "b.st"]);
}

#[test]
fn vit_l_diff_fits_80_100_and_120_columns() {
    snapshots_at_each_width(
        "vitl16",
        "blocks.15.attn.sdpa=1e-3",
        "vitl",
        &["a.st", "b.st"],
    );
}

#[test]
fn triangle_fits_80_100_and_120_columns() {
    snapshots_at_each_width(
        "vits16",
        "blocks.7.ls2=1e-3",
        "triangle",
        &["a.st", "b.st", "c.st"],
    );
}

#[test]
fn wide_terminals_get_one_table_with_a_column_per_stage() {
    let dir = dumps("vits16", "blocks.7.ls2=1e-3");
    let out = run_in(dir.path(), &["diff", "a.st", "b.st", "--width", "200"], 1);
    assert!(out.contains("┆ attn.sdpa ┆"), "{out}");
    assert!(out.contains("┆ mlp.hidden ┆"), "{out}");
    assert!(!out.contains("attention (norm1"), "{out}");
    assert!(!out.contains("row max"), "{out}");
}

#[test]
fn tokens_table_and_markdown_summary() {
    let dir = dumps("vits16", "blocks.7.ls2=1e-3");
    let table = run_in(
        dir.path(),
        &["diff", "a.st", "b.st", "--tokens", "--width", "80"],
        1,
    );
    assert_fits(&fitted_lines(&table), 80);
    insta::assert_snapshot!("tokens_vits_80", table);
    let md = run_in(
        dir.path(),
        &["diff", "a.st", "b.st", "--tokens", "--format", "markdown"],
        1,
    );
    insta::assert_snapshot!("tokens_vits_markdown", md);
    let tri = run_in(
        dir.path(),
        &["diff", "a.st", "b.st", "c.st", "--format", "markdown"],
        1,
    );
    insta::assert_snapshot!("triangle_markdown", tri);
}

/// tmux on a private socket, removed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("dinodiff-test-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (Debian package tmux; tools/dev documents the set-up)")
    }

    /// Runs `command` in a detached `width` × 50 pane and returns what the pane shows, history
    /// included, lines the terminal wrapped joined back (`-J`), so a long line stays long.
    fn pane_output(&self, name: &str, width: usize, dir: &Path, command: &str) -> String {
        let script = format!(
            "cd '{}' && {command}; echo __done__; sleep 60",
            dir.display()
        );
        let w = width.to_string();
        let started = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &w,
            "-y",
            "50",
            "sh",
            "-c",
            &script,
        ]);
        assert!(started.status.success(), "{started:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", name]);
            let text = String::from_utf8_lossy(&shown.stdout).to_string();
            if text.contains("__done__") {
                return text;
            }
            assert!(Instant::now() < deadline, "no end in sight:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The width comes from the terminal itself: a 120-column pane gets the attention/MLP halves,
/// an 80-column pane the glyph grid, and no line is longer than the pane (piped, both would be
/// 100 columns).
#[test]
fn in_a_real_terminal_the_table_fits_the_pane() {
    let dir = dumps("vitl16", "blocks.15.attn.sdpa=1e-3");
    let bin = dinodiff_bin();
    let command = format!("{} diff a.st b.st", bin.display());
    let tmux = Tmux::new();
    let wide = tmux.pane_output("wide", 120, dir.path(), &command);
    assert!(wide.contains("attention (norm1 … residual1):"), "{wide}");
    assert!(wide.contains("MLP (norm2 … output):"), "{wide}");
    assert_fits(&fitted_lines(&wide), 120);
    let narrow = tmux.pane_output("narrow", 80, dir.path(), &command);
    assert!(narrow.contains("row max"), "{narrow}");
    assert!(narrow.contains("block 23"), "{narrow}");
    assert_fits(&fitted_lines(&narrow), 80);
}
