//! Plain-text tables of `dinodiff stages` and `dinodiff variants` (their JSON is the serde form of
//! [`crate::vocabulary`]'s data), and of `dinodiff tools`.

use crate::vocabulary::{StageList, VariantList};
use std::fmt::Write;

pub fn stages_table(list: &StageList) -> String {
    let mut out = String::new();
    for group in ["stem", "block", "head"] {
        let title = match group {
            "block" => format!(
                "per block ({})",
                list.block_name.replace("{name}", "<name>")
            ),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{title}:");
        for s in list.stages.iter().filter(|s| s.group == group) {
            let headline = s
                .headline
                .map_or(String::new(), |h| format!("  (headline: {h})"));
            let _ = writeln!(out, "  {:<12} [{}]{headline}", s.name, s.shape.join(", "));
        }
    }
    let _ = writeln!(out, "dimensions:");
    for d in &list.dims {
        let _ = writeln!(out, "  {:<6} {}", d.symbol, d.meaning);
    }
    out
}

pub fn variants_table(list: &VariantList) -> String {
    let mut out = String::from("name          D  depth heads  hd  ffn     hidden  qkv bias\n");
    for v in &list.variants {
        let a = &v.arch;
        let _ = writeln!(
            out,
            "{:<11} {:>4} {:>5} {:>5} {:>4}  {:<7} {:>6}  {}",
            v.name,
            a.embed_dim,
            a.depth,
            a.heads,
            v.head_dim,
            a.ffn.name(),
            a.ffn_hidden,
            if a.qkv_bias { "yes" } else { "no" }
        );
    }
    out
}

/// `dinodiff tools`: each embedded tool, what it does, and the packages it needs.
pub fn tools_table(tools: impl Iterator<Item = crate::pytools::Tool>) -> String {
    let mut out = String::new();
    for t in tools {
        let _ = writeln!(out, "{:<21} {}", t.info.name, t.info.about);
        let (major, minor) = t.info.min_python;
        let _ = writeln!(
            out,
            "{:<21} needs Python >= {major}.{minor}, {}",
            "",
            t.info.needs.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n`dinodiff tools NAME > FILE.py` writes one as a self-contained script (the modules it \
         imports\nfrom dinodiff's tools/ are in it); it runs on the Python and with the packages it \
         needs."
    );
    out
}
