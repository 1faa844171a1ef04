//! An ONNX dump's deployed headline and optimizer effect, in every text format.

use super::*;

/// A diff whose B is an ONNX capture with a deployed headline and an optimizer effect.
fn deployed(over_tolerance: bool) -> DiffReport {
    let mut r = drifting();
    r.b.deployed_headline = true;
    r.b.optimizer_effect = Some(crate::dump::OptimizerEffect {
        deployed_opt_level: "all".into(),
        graph_opt_level: "disable".into(),
        max_abs: if over_tolerance { 0.25 } else { 2.6e-6 },
        over_tolerance,
        outputs: Vec::new(),
    });
    r
}

#[test]
fn the_deployed_headline_and_the_optimizer_effect_are_said_in_every_format() {
    let list = Options::default();
    for over in [false, true] {
        let r = deployed(over);
        let v = view::diff(&r, &list);
        let effect = if over { "2.50e-01" } else { "2.60e-06" };
        assert!(v.dumps[1].1.ends_with(&format!(
            ", headline from the deployed session (ONNX Runtime optimizations all change the \
             outputs by max|Δ| {effect} against the graph as exported (disable))"
        )));
        let findings: Vec<String> = note_sentences(&v.notes)
            .into_iter()
            .filter(|s| s.starts_with("finding: ONNX Runtime's graph optimizations"))
            .collect();
        assert_eq!(findings.len(), usize::from(over));
        let mut facts = vec![v.dumps[1].1.clone()];
        facts.extend(findings);
        assert_all_say(&facts, |x| x.diff(&r, &list));
    }
}
