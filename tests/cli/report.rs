//! `dinodiff report` (and `diff --html`) end to end on small canonical dumps with a real token
//! layout (1 CLS + 1 storage + 2 × 2 patches): the page is offline, has one heatmap cell per
//! compared stage, names the patch map's stage; its text (pictures left out) is snapshotted; bad
//! `--stage` values and unwritable outputs are errors that write nothing.
//! Chromium loads the page in `tests/python/test_report_html.py`.

use crate::common::{all_names, canonical_dump, dinodiff, json_in, run_in, stderr_of};
use dinodiff::dump::SourceKind;
use regex::Regex;
use std::path::Path;

/// The shape of each stage of the tiny model: D = 2, 1 storage token, a 2 × 2 patch grid on an
/// 8 × 8 input (4-pixel patches), 1 head, MLP hidden 4.
fn tiny_shape(name: &str) -> Vec<usize> {
    let column = name.rsplit_once('.').map_or(name, |(_, c)| c);
    match (name, column) {
        ("input", _) => vec![1, 3, 8, 8],
        ("patch_embed", _) | ("patches", _) => vec![1, 4, 2],
        ("rope.sin", _) | ("rope.cos", _) => vec![4, 2],
        ("cls", _) | ("pooled", _) => vec![1, 2],
        ("storage", _) => vec![1, 1, 2],
        (_, "qkv") => vec![1, 6, 6],
        (_, "q") | (_, "k") | (_, "v") => vec![1, 1, 6, 2],
        (_, "hidden") => vec![1, 6, 4],
        _ => vec![1, 6, 2],
    }
}

/// A tiny dump; `fault`: patch 3 (token 5) of every stage from `blocks.1.ls2` on is off by 0.01.
fn tiny(path: &Path, source: SourceKind, fault: bool) {
    let mut faulty = false;
    canonical_dump(path, source, |name, v, shape| {
        *shape = tiny_shape(name);
        let n: usize = shape.iter().product();
        *v = (0..n)
            .map(|e| ((name.len() * 5 + e * 3) % 13) as f32 * 0.0625 - 0.375)
            .collect();
        faulty |= fault && name == "blocks.1.ls2";
        if faulty && shape.len() == 3 && shape[1] == 6 {
            v[5 * shape[2]] += 0.01;
        }
    });
}

fn pair(fault: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny(&dir.path().join("a.st"), SourceKind::Meta, false);
    tiny(&dir.path().join("b.st"), SourceKind::Onnx, fault);
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The page's text as a reader sees it, pictures and styles left out, volatile facts redacted.
fn text_of(html: &str, dir: &Path) -> String {
    let drop = Regex::new(r"(?s)<title>.*?</title>|<style>.*?</style>").unwrap();
    let html = drop.replace_all(html, "");
    let pictures = Regex::new(r"(?s)<svg.*?</svg>").unwrap();
    let html = pictures.replace_all(&html, "[picture]");
    let breaks =
        Regex::new(r"<br>|</(p|li|tr|h1|h2|h3|summary|pre|figcaption|nav|label)>").unwrap();
    let html = breaks.replace_all(&html, "\n");
    let cells = Regex::new(r"</t[dh]>").unwrap();
    let html = cells.replace_all(&html, " | ");
    let tags = Regex::new(r"<[^>]*>").unwrap();
    let text = tags
        .replace_all(&html, " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let host = gethostname();
    let time = Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    let version = format!("dinodiff | {} |", env!("CARGO_PKG_VERSION"));
    let command = Regex::new(r"^command line \| .* \|$").unwrap();
    let space = Regex::new(r"[ \t]+").unwrap();
    text.lines()
        .map(|l| space.replace_all(l.trim(), " ").to_string())
        .filter(|l| !l.is_empty() && l != "|")
        .map(|l| {
            let l = l.replace(&dir.display().to_string(), "<dir>");
            let l = time.replace_all(&l, "<time>").to_string();
            let l = l.replace(&version, "dinodiff | <version> |");
            let l = command
                .replace(&l, "command line | <the test's command line> |")
                .to_string();
            if host.is_empty() {
                l
            } else {
                l.replace(&host, "<host>")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// `src`, `href` and `url()` values of a page.
fn references(html: &str) -> Vec<String> {
    let re = Regex::new(r#"(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)"#).unwrap();
    re.captures_iter(html)
        .map(|c| c.get(1).or(c.get(2)).unwrap().as_str().to_string())
        .collect()
}

fn assert_offline(html: &str) {
    let refs = references(html);
    assert!(
        !refs.is_empty(),
        "the page references its images and sections"
    );
    for r in &refs {
        assert!(
            r.starts_with('#') || r.starts_with("data:image/png;base64,"),
            "a reference that is neither an anchor nor inline data: {r:.80}"
        );
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script"), "the page runs no script");
}

#[test]
fn a_diff_report_is_one_offline_page_with_a_cell_per_compared_stage() {
    let d = pair(true);
    let a = dinodiff()
        .current_dir(d.path())
        .args(["report", "a.st", "b.st", "-o", "r.html"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.starts_with("wrote r.html (") && err.ends_with("KiB): FAIL\n"),
        "{err}"
    );
    let html = read(d.path(), "r.html");
    assert_offline(&html);
    let json = json_in(d.path(), &["diff", "a.st", "b.st", "--format", "json"], 1);
    let canonical = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["canonical"] == true)
        .count();
    assert_eq!(canonical, all_names(2).len());
    assert_eq!(html.matches(r#"<g class="cell"#).count(), canonical);
    // The first stage over tolerance is outlined and marked; so is every later failing stage.
    assert_eq!(html.matches(r#"<g class="cell over first""#).count(), 1);
    assert!(html.contains(r#"<g class="cell over first" data-stage="blocks.1.ls2">"#));
    // The patch map is of that stage, and its worst patch is the faulty one (row 1, column 1).
    assert!(
        html.contains(
            "per-patch max|Δ| at <code>blocks.1.ls2</code> (the first stage over tolerance"
        )
    );
    assert!(
        html.contains("worst patch: row 1, column 1, max|Δ| 1.000e-02"),
        "worst patch"
    );
    insta::assert_snapshot!("report_diff_text", text_of(&html, d.path()));
}

#[test]
fn a_triangle_report_draws_every_side() {
    // A: Meta; B: the port, with the fault; C: its export, which inherits it.
    let d = pair(true);
    tiny(&d.path().join("b.st"), SourceKind::Eqx, true);
    tiny(&d.path().join("c.st"), SourceKind::Onnx, true);
    run_in(
        d.path(),
        &["report", "a.st", "b.st", "c.st", "-o", "t.html"],
        1,
    );
    let html = read(d.path(), "t.html");
    assert_offline(&html);
    assert_eq!(
        html.matches(r#"<g class="cell"#).count(),
        3 * all_names(2).len()
    );
    assert_eq!(html.matches(r#"<figure class="patches">"#).count(), 3);
    insta::assert_snapshot!("report_triangle_text", text_of(&html, d.path()));
}

#[test]
fn stage_chooses_the_patch_map() {
    let d = pair(true);
    run_in(
        d.path(),
        &[
            "report",
            "a.st",
            "b.st",
            "-o",
            "r.html",
            "--stage",
            "blocks.0.output",
        ],
        1,
    );
    let html = read(d.path(), "r.html");
    assert!(html.contains(
        "per-patch max|Δ| at <code>blocks.0.output</code> (the stage asked for (--stage))"
    ));
    assert!(html.contains(
        dinodiff::report::html::svg::esc(dinodiff::report::words::ALL_PATCHES_EQUAL).as_str()
    ));
}

#[test]
fn bad_stages_and_outputs_are_errors_that_write_nothing() {
    let d = pair(false);
    let cases: [(&[&str], &str); 3] = [
        (
            &["--stage", "blocks.9.nope"],
            "error: --stage \"blocks.9.nope\" is not a canonical stage name (`dinodiff stages` lists them), e.g. blocks.5.ls2\n",
        ),
        (
            &["--stage", "cls"],
            "error: --stage cls: the pair with a.st has no compared tensor of that stage with a token axis; a patch map needs a stage such as tokens, blocks.0.norm1, blocks.0.attn.qkv, blocks.0.attn.q (`dinodiff stages` lists them)\n",
        ),
        (
            &["--stage", "blocks.7.ls2"],
            "error: --stage blocks.7.ls2: the pair with a.st has no compared tensor of that stage with a token axis; a patch map needs a stage such as tokens, blocks.0.norm1, blocks.0.attn.qkv, blocks.0.attn.q (`dinodiff stages` lists them)\n",
        ),
    ];
    for (extra, message) in cases {
        let a = dinodiff()
            .current_dir(d.path())
            .args([&["report", "a.st", "b.st", "-o", "r.html"][..], extra].concat())
            .assert()
            .code(2);
        assert_eq!(stderr_of(&a), message);
        assert!(!d.path().join("r.html").exists());
    }
    let a = dinodiff()
        .current_dir(d.path())
        .args(["report", "a.st", "b.st", "-o", "no/such/dir/r.html"])
        .assert()
        .code(2);
    let err = stderr_of(&a);
    assert!(
        err.starts_with("error: cannot write the report no/such/dir/r.html: "),
        "{err}"
    );
}

#[test]
fn diff_writes_the_page_beside_its_own_output() {
    let d = pair(true);
    let md = run_in(
        d.path(),
        &[
            "diff", "a.st", "b.st", "--format", "markdown", "--html", "r.html", "--tokens",
        ],
        1,
    );
    assert!(md.starts_with("### ❌ dinodiff FAIL · "), "{md}");
    let html = read(d.path(), "r.html");
    assert_offline(&html);
    assert!(html.contains("<title>dinodiff diff: FAIL</title>"));
    // --tokens adds its table to the page too.
    assert!(html.contains("<summary>--tokens: tokens: 1 CLS, 1 storage, 4 patches</summary>"));
    // --stage belongs to the page.
    let a = dinodiff()
        .current_dir(d.path())
        .args(["diff", "a.st", "b.st", "--stage", "blocks.0.output"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--html <FILE>"));
}
