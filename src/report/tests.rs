//! Renderers driven by hand-built report data (no dumps, no files): every text format says every
//! fact of [`super::view`] with the sentences of [`super::words`]; JSON carries the data.

use super::view::{self, Note};
use super::{JsonRenderer, MarkdownRenderer, Options, Renderer, TableRenderer, TableStyle, words};
use crate::align::{PairedBy, ShapeRelation};
use crate::diff::{
    DiffReport, DumpInfo, Headline, InputCheck, InputStatus, PairResult, Unmatched, Verdict,
};
use crate::dump::SourceKind;
use crate::metrics::{Comparison, Tolerance};
use crate::triangulate::{Diagnosis, FirstOver, Side, SidePair, TriangleReport, diagnose};

mod deployed;

fn info(path: &str, source: SourceKind) -> DumpInfo {
    DumpInfo {
        path: path.into(),
        source,
        has_manifest: true,
        variant: Some("vits16".into()),
        model_sha256: None,
        input_sha256: Some("ab".repeat(32)),
        created: None,
        tensors: 3,
        optimizer_effect: None,
        deployed_headline: false,
    }
}

fn metrics(max_abs: f64, fails: bool) -> Comparison {
    Comparison {
        elements: 4,
        max_abs,
        argmax: Some(1),
        a_at_max: Some(0.5),
        b_at_max: Some(0.5 + max_abs),
        mean_abs: max_abs / 4.0,
        rms: max_abs / 2.0,
        max_rel: max_abs,
        cosine: Some(0.999),
        nan_a: 0,
        nan_b: 0,
        inf_a: 0,
        inf_b: 0,
        nonfinite_mismatches: 0,
        over_tolerance: u64::from(fails),
        exact: false,
    }
}

fn pair(name: &str, max_abs: f64, fails: bool) -> PairResult {
    PairResult {
        name: name.into(),
        a: name.into(),
        b: name.into(),
        paired_by: PairedBy::Name,
        canonical: crate::model::Stage::parse(name).is_some(),
        shape_a: vec![1, 4],
        shape_b: vec![1, 4],
        dtype_a: "F32".into(),
        dtype_b: "F32".into(),
        shapes: ShapeRelation::Equal,
        layout: None,
        metrics: Some(metrics(max_abs, fails)),
        argmax_index: Some(vec![0, 1]),
        amplification: None,
        fails,
        tokens: None,
    }
}

/// A report over `pairs` (name, max|Δ|, fails), summarized as `diff::diff` does.
fn report(pairs: &[(&str, f64, bool)], status: InputStatus, strays: [&[&str]; 2]) -> DiffReport {
    let pairs: Vec<PairResult> = pairs.iter().map(|&(n, m, f)| pair(n, m, f)).collect();
    let failing: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].fails).collect();
    let max = |i: &usize| pairs[*i].metrics.as_ref().unwrap().max_abs;
    let worst = if failing.is_empty() {
        (0..pairs.len()).max_by(|i, j| max(i).total_cmp(&max(j)))
    } else {
        failing
            .iter()
            .copied()
            .max_by(|i, j| max(i).total_cmp(&max(j)))
    };
    let headline = pairs
        .iter()
        .filter(|p| p.name == "cls" || p.name == "pooled")
        .map(|p| Headline {
            name: p.name.clone(),
            cosine: Some(0.999),
            max_abs: p.metrics.as_ref().unwrap().max_abs,
            fails: p.fails,
            a_deployed: false,
            b_deployed: false,
        })
        .collect();
    DiffReport {
        schema: crate::diff::SCHEMA,
        a: info("a.st", SourceKind::Meta),
        b: info("b.st", SourceKind::Onnx),
        tolerance: Tolerance {
            atol: 1e-4,
            rtol: 1e-4,
        },
        input: InputCheck {
            status,
            a_sha256: Some("ab".repeat(32)),
            b_sha256: Some("ab".repeat(32)),
        },
        headline,
        unmatched: Unmatched {
            a: strays[0].iter().map(|s| s.to_string()).collect(),
            b: strays[1].iter().map(|s| s.to_string()).collect(),
        },
        first_over: pairs.iter().position(|p| p.fails),
        worst,
        verdict: Verdict {
            pass: failing.is_empty(),
            compared: pairs.len(),
            failed: failing.len(),
            shape_mismatches: 0,
            incomplete: false,
            coverage: crate::diff::Coverage {
                basis: crate::diff::CoverageBasis::CanonicalStages,
                paired: pairs.len(),
                comparable: pairs.len(),
                fraction: 1.0,
                min_coverage: crate::diff::DEFAULT_MIN_COVERAGE,
            },
        },
        pairs,
        token_layout: None,
    }
}

fn drifting() -> DiffReport {
    report(
        &[
            ("input", 0.0, false),
            ("blocks.0.mlp", 0.01, true),
            ("cls", 0.02, true),
            ("pooled", 0.5, true),
            ("extra.weight", 1e-6, false),
        ],
        InputStatus::Match,
        [&["only_a"], &["only_b", "also_b"]],
    )
}

fn renderers() -> Vec<(&'static str, Box<dyn Renderer>)> {
    vec![
        (
            "table",
            Box::new(TableRenderer {
                style: TableStyle::default(),
            }),
        ),
        ("markdown", Box::new(MarkdownRenderer)),
    ]
}

/// Markdown escapes `|`; compare its text unescaped.
fn plain(text: String) -> String {
    text.replace("\\|", "|")
}

/// Every sentence of `facts` is in every text format's rendering.
fn assert_all_say(facts: &[String], render: impl Fn(&dyn Renderer) -> String) {
    for (name, r) in renderers() {
        let text = plain(render(r.as_ref()));
        for f in facts {
            assert!(
                text.contains(f.as_str()),
                "{name} does not say {f:?}:\n{text}"
            );
        }
    }
}

fn note_sentences(notes: &[Note]) -> Vec<String> {
    notes
        .iter()
        .flat_map(|n| match n {
            Note::Detail {
                title,
                tensor,
                lines,
            } => [
                vec![format!("{title}: ")],
                vec![tensor.clone()],
                lines.clone(),
            ]
            .concat(),
            Note::Sentence(s) => vec![s.clone()],
        })
        .collect()
}

#[test]
fn every_text_format_says_every_fact_of_a_diff() {
    let list = Options {
        list_unmatched: true,
    };
    for (r, status) in [
        (drifting(), "input: same input (sha256 abababababababab)"),
        (
            report(
                &[("x", 1e-6, false)],
                InputStatus::MismatchAllowed,
                [&[], &[]],
            ),
            "input: DIFFERENT inputs (allowed by --allow-input-mismatch)",
        ),
        (
            report(&[("x", 0.0, false)], InputStatus::Unknown, [&[], &[]]),
            "input: not checked (a dump records no input hash)",
        ),
    ] {
        let v = view::diff(&r, &list);
        assert_eq!(v.input, status);
        let mut facts = vec![v.input.clone(), v.verdict.clone()];
        facts.extend(v.dumps.iter().flat_map(|(p, s)| [p.clone(), s.clone()]));
        facts.extend(v.headline.iter().map(|h| h.label.to_string()));
        facts.extend(
            v.flat
                .iter()
                .flat_map(|f| [f.tensor.clone(), f.mean_abs.clone()]),
        );
        facts.extend(note_sentences(&v.notes));
        if let Some(s) = &v.strays {
            facts.push(s.summary.clone());
            facts.extend(s.listed.iter().map(|(_, t)| t.clone()));
        }
        assert_all_say(&facts, |x| x.diff(&r, &list));
    }
}

#[test]
fn the_largest_difference_or_equality_is_said_when_nothing_fails() {
    let close = report(
        &[("a", 1e-6, false), ("b", 3e-6, false)],
        InputStatus::Match,
        [&[], &[]],
    );
    let notes = view::notes(&close);
    assert!(matches!(&notes[..], [Note::Detail { title, tensor, .. }]
        if *title == words::LARGEST && tensor == "b"));
    assert_all_say(&["largest difference: ".into(), "b".into()], |x| {
        x.diff(&close, &Options::default())
    });
    let equal = report(&[("a", 0.0, false)], InputStatus::Match, [&[], &[]]);
    assert_eq!(
        view::notes(&equal),
        [Note::Sentence(words::ALL_EQUAL.into())]
    );
    assert_all_say(&[words::ALL_EQUAL.into()], |x| {
        x.diff(&equal, &Options::default())
    });
}

#[test]
fn the_largest_differences_rank_failures_first_then_by_size_and_skip_equal_pairs() {
    let r = report(
        &[
            ("a", 0.0, false),
            ("b", 5e-5, false),
            ("c", 1e-3, true),
            ("d", 9e-5, false),
            ("e", 2e-3, true),
            ("f", 1e-6, false),
            ("g", 1e-7, false),
        ],
        InputStatus::Match,
        [&[], &[]],
    );
    let rows = view::worst_rows(&r);
    let order: Vec<(usize, &str, bool)> = rows
        .iter()
        .map(|w| (w.rank, w.stage.as_str(), w.max_abs.fails))
        .collect();
    assert_eq!(
        order,
        [
            (1, "e", true),
            (2, "c", true),
            (3, "d", false),
            (4, "b", false),
            (5, "f", false)
        ]
    );
    assert_eq!(rows[0].max_abs.text, "2.0e-3");
    let stages: Vec<String> = rows.iter().map(|w| w.stage.clone()).collect();
    assert_all_say(&stages, |x| x.diff(&r, &Options::default()));
}

#[test]
fn compact_numbers_keep_two_digits_and_a_short_exponent() {
    assert_eq!(words::compact(5.04e-6), "5.0e-6");
    assert_eq!(words::compact(0.64), "6.4e-1");
    assert_eq!(words::compact(1234.0), "1.2e3");
    assert_eq!(words::compact(3.0e-12), "3.0e-12");
    assert_eq!(words::compact(0.0), "0");
    assert_eq!(words::compact(f64::NAN), "NaN");
}

#[test]
fn markdown_lists_strays_only_when_asked() {
    let r = drifting();
    let md = MarkdownRenderer.diff(&r, &Options::default());
    assert!(
        md.contains(
            "\nunmatched: 1 tensors only in A, 2 only in B (--list-unmatched lists them)\n"
        )
    );
    assert!(!md.contains("only in A: "), "{md}");
    let listed = MarkdownRenderer.diff(
        &r,
        &Options {
            list_unmatched: true,
        },
    );
    assert!(
        listed.ends_with("\n- only in A: `only_a`\n- only in B: `only_b`\n- only in B: `also_b`\n"),
        "{listed}"
    );
}

#[test]
fn markdown_diff_opens_with_the_summary_dumps_input_and_verdict() {
    let md = MarkdownRenderer.diff(&drifting(), &Options::default());
    assert!(
        md.starts_with(
            "### ❌ dinodiff FAIL · coverage 100% (5 of 5 canonical stages) · first divergence \
             blocks.0.mlp (max|Δ| 1.0e-2) · CLS max|Δ| 2.0e-2\n\n`a.st` (meta, vits16, 3 tensors) ⇔ `b.st` (onnx, vits16, 3 \
             tensors)\n\ninput: same input (sha256 abababababababab)\n\nverdict: FAIL: 3 of 5 \
             tensor pairs over tolerance (atol 1e-04, rtol 1e-04)\n\n"
        ),
        "{md}"
    );
    assert!(md.contains("| `extra.weight` | [1, 4] | F32 | 1.000e-06 | 2.500e-07 | 0.999000 |"));
}

fn first(side: Side, stage: &str, max_abs: Option<f64>, amp: Option<f64>) -> FirstOver {
    FirstOver {
        side,
        stage: stage.into(),
        max_abs,
        amplification: amp,
    }
}

#[test]
fn one_sentence_per_diagnosis_kind() {
    let names = ["Meta".to_string(), "Equinox".into(), "ONNX".into()];
    let port = first(
        Side::ReferencePort,
        "blocks.3.mlp",
        Some(0.0123),
        Some(812.34),
    );
    let export = first(Side::PortExport, "blocks.7.attn", None, None);
    let cases = [
        (
            Diagnosis::AllAgree,
            "all three agree within tolerance: Equinox reproduces Meta, and ONNX reproduces \
             Equinox.",
        ),
        (
            Diagnosis::PortDiverges(port.clone()),
            "Meta ⇔ Equinox diverges: the port is at fault. The first stage over tolerance is \
             `blocks.3.mlp` (max|Δ| 1.23e-02, 812.3× the stage before it); fix Equinox there. \
             ONNX follows Equinox faithfully (Equinox ⇔ ONNX is clean), so it inherits the \
             difference.",
        ),
        (
            Diagnosis::ExportDrifts(export.clone()),
            "Meta ⇔ Equinox is clean, but ONNX drifts from Equinox: the export is at fault, not \
             the port. ONNX departs from Equinox first at `blocks.7.attn` (shapes differ).",
        ),
        (
            Diagnosis::BothDiverge {
                port: port.clone(),
                export,
            },
            "both the port and the export depart: Meta ⇔ Equinox diverges first at \
             `blocks.3.mlp` (max|Δ| 1.23e-02, 812.3× the stage before it) (fix Equinox there), \
             and ONNX also drifts from Equinox, first at `blocks.7.attn` (shapes differ).",
        ),
        (
            Diagnosis::Accumulated(first(Side::ReferenceExport, "cls", Some(2e-4), Some(1.0))),
            "Meta ⇔ Equinox and Equinox ⇔ ONNX are each within tolerance, but their differences \
             add up: Meta ⇔ ONNX is over tolerance first at `cls` (max|Δ| 2.00e-04, 1.0× the \
             stage before it). Tighten either side, or widen the tolerance.",
        ),
    ];
    for (d, sentence) in cases {
        assert_eq!(words::diagnosis(&names, &d), sentence);
    }
}

/// Meta ⇔ Equinox diverges at blocks.0.mlp; the ONNX dump has two strays.
fn triangle() -> TriangleReport {
    let bad = [
        ("input", 0.0, false),
        ("blocks.0.mlp", 0.01, true),
        ("cls", 0.02, true),
    ];
    let good = [
        ("input", 0.0, false),
        ("blocks.0.mlp", 1e-7, false),
        ("cls", 0.0, false),
    ];
    let ac = report(&bad, InputStatus::Match, [&[], &["Add_1", "Mul_2"]]);
    let ab = report(&bad, InputStatus::Match, [&[], &[]]);
    let bc = report(&good, InputStatus::Match, [&[], &["Add_1", "Mul_2"]]);
    TriangleReport {
        names: ["Meta".into(), "Equinox".into(), "ONNX".into()],
        diagnosis: diagnose(&ac, &ab, &bc),
        pass: false,
        sides: vec![
            SidePair {
                side: Side::ReferenceExport,
                report: ac,
            },
            SidePair {
                side: Side::ReferencePort,
                report: ab,
            },
            SidePair {
                side: Side::PortExport,
                report: bc,
            },
        ],
    }
}

#[test]
fn every_text_format_says_every_fact_of_a_triangle() {
    let t = triangle();
    let list = Options {
        list_unmatched: true,
    };
    let v = view::triangle(&t, &list);
    let mut facts = v.dumps.clone();
    facts.extend([v.input.clone(), v.diagnosis.clone()]);
    facts.extend(
        v.rows
            .iter()
            .flat_map(|r| [r.label.clone(), r.verdict.text.clone()]),
    );
    for b in &v.bodies {
        facts.push(b.label.clone());
        facts.extend(note_sentences(&b.notes));
    }
    for e in &v.ends {
        facts.push(e.verdict.clone());
        if let Some(s) = &e.strays {
            facts.push(s.summary.clone());
            facts.extend(s.listed.iter().map(|(_, t)| t.clone()));
        }
    }
    assert!(facts.contains(&"Meta ⇔ ONNX: 0 tensors only in Meta, 2 only in ONNX".to_string()));
    assert!(facts.contains(&"FAIL (2 of 3)".to_string()));
    assert!(facts.contains(&"largest difference: ".to_string()));
    assert_all_say(&facts, |x| x.triangle(&t, &list));
    let quiet = MarkdownRenderer.triangle(&t, &Options::default());
    assert!(!quiet.contains("only in"), "{quiet}");
    assert!(quiet.contains("- input: same input in all three (sha256 abababababababab)\n"));
}

#[test]
fn triangle_json_carries_the_diagnosis_as_data_beside_its_sentence() {
    let t = triangle();
    let json: serde_json::Value =
        serde_json::from_str(&JsonRenderer.triangle(&t, &Options::default())).unwrap();
    assert_eq!(json["schema"], "dinodiff.triangle/1");
    assert_eq!(
        json["names"],
        serde_json::json!(["Meta", "Equinox", "ONNX"])
    );
    let d = &json["diagnosis"];
    assert_eq!(d["finding"], "port_diverges");
    assert_eq!(
        d["first_over"],
        serde_json::json!([{"side": "reference_port", "stage": "blocks.0.mlp",
                            "max_abs": 0.01, "amplification": null}])
    );
    assert_eq!(d["text"], words::diagnosis(&t.names, &t.diagnosis));
    assert_eq!(json["sides"][1]["label"], "Meta ⇔ Equinox");
    assert_eq!(json["sides"][1]["side"], "reference_port");
    assert_eq!(json["sides"][2]["report"]["schema"], "dinodiff.diff/1");
    assert_eq!(
        json["sides"][0]["report"]["unmatched"]["b"],
        serde_json::json!(["Add_1", "Mul_2"])
    );
    assert_eq!(json["pass"], false);
}

#[test]
fn diff_json_is_the_report_whatever_the_options() {
    let r = drifting();
    let quiet = JsonRenderer.diff(&r, &Options::default());
    let list = Options {
        list_unmatched: true,
    };
    assert_eq!(quiet, JsonRenderer.diff(&r, &list));
    let json: serde_json::Value = serde_json::from_str(&quiet).unwrap();
    assert_eq!(json["schema"], "dinodiff.diff/1");
    assert_eq!(json["input"]["status"], "match");
    assert_eq!(
        json["unmatched"]["b"],
        serde_json::json!(["only_b", "also_b"])
    );
}

#[test]
fn inspect_lines_and_rows_in_every_format() {
    let manifest = crate::dump::Manifest::for_this_process(SourceKind::Meta);
    let i = crate::inspect::Inspection {
        schema: crate::inspect::SCHEMA,
        path: "x.st".into(),
        file_size: 1234,
        has_manifest: true,
        manifest,
        tensors: vec![crate::inspect::TensorSummary {
            name: "cls".into(),
            native: "head/cls".into(),
            stage: Some("cls".into()),
            shape: vec![1, 4],
            dtype: "F32".into(),
            stats: crate::metrics::Stats {
                elements: 4,
                min: Some(-1.0),
                max: Some(2.0),
                mean: Some(0.25),
                std: None,
                nan: 1,
                inf: 0,
            },
        }],
    };
    let v = view::inspect(&i);
    assert_eq!(v.lines[0], "x.st (1234 bytes, 1 tensors)");
    assert_eq!(
        v.rows[0],
        [
            "0",
            "cls",
            "head/cls",
            "[1, 4]",
            "F32",
            "-1.000e+00",
            "2.000e+00",
            "2.500e-01",
            "-",
            "1",
            "0"
        ]
        .map(String::from)
    );
    let mut facts = v.lines.clone();
    facts.extend(v.rows[0].iter().cloned());
    assert_all_say(&facts, |x| x.inspect(&i));
    let md = MarkdownRenderer.inspect(&i);
    assert!(
        md.contains(
            "| 0 | cls | head/cls | [1, 4] | F32 | -1.000e+00 | 2.000e+00 | 2.500e-01 | - | 1 | 0 |"
        ),
        "{md}"
    );
    let json: serde_json::Value = serde_json::from_str(&JsonRenderer.inspect(&i)).unwrap();
    assert_eq!(json["schema"], "dinodiff.inspect/1");
    assert_eq!(json["tensors"][0]["native"], "head/cls");
}
