//! The detail lines of one pair (first over tolerance, worst, largest difference).

use super::{cosine, sci};
use crate::diff::PairResult;

/// Detail lines for one pair (first over tolerance, worst, largest difference).
pub fn detail_lines(p: &PairResult) -> Vec<String> {
    let mut out = Vec::new();
    let shape = |s: &[usize]| format!("{s:?}");
    if p.a != p.b {
        let by = match p.paired_by {
            crate::align::PairedBy::Value => " (paired by value)",
            _ => "",
        };
        out.push(format!("A tensor {:?}, B tensor {:?}{by}", p.a, p.b));
    }
    let Some(m) = &p.metrics else {
        out.push(format!(
            "shapes differ: A {} {} vs B {} {}; not compared",
            p.dtype_a,
            shape(&p.shape_a),
            p.dtype_b,
            shape(&p.shape_b)
        ));
        return out;
    };
    let at = match (&p.argmax_index, m.a_at_max, m.b_at_max) {
        (Some(idx), Some(x), Some(y)) => format!(" at {idx:?}: A {}, B {}", sci(x, 9), sci(y, 9)),
        _ => String::new(),
    };
    out.push(format!("max|Δ| {}{at}", sci(m.max_abs, 3)));
    out.push(format!(
        "mean|Δ| {}  rms {}  max rel {}  cosine {}",
        sci(m.mean_abs, 3),
        sci(m.rms, 3),
        sci(m.max_rel, 3),
        cosine(m.cosine)
    ));
    out.push(format!(
        "{} of {} elements over tolerance; NaN A {} B {}, Inf A {} B {}, non-finite mismatches {}",
        m.over_tolerance, m.elements, m.nan_a, m.nan_b, m.inf_a, m.inf_b, m.nonfinite_mismatches
    ));
    if let Some(r) = p.amplification {
        out.push(format!("amplification {r:.2}× against the stage before it"));
    }
    if let Some(layout) = &p.layout {
        out.push(format!(
            "B {} read as A's {} through {layout}",
            shape(&p.shape_b),
            shape(&p.shape_a)
        ));
    } else if p.shape_a != p.shape_b {
        out.push(format!(
            "shapes reconciled: A {} vs B {} (leading singleton dims)",
            shape(&p.shape_a),
            shape(&p.shape_b)
        ));
    }
    out
}
