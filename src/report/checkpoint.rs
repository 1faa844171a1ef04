//! The plain-text view of `dinodiff checkpoint` (its JSON is the serde form of
//! [`crate::checkpoint::Listing`]): the container facts, then one line per tensor.

use crate::checkpoint::{Choice, Listing, Provenance};
use std::fmt::Write;

/// How the state dict was found, in words.
pub fn found_words(p: &Provenance) -> String {
    let place = if p.key.is_empty() {
        format!("{} at the root", p.container)
    } else {
        format!("{} under `{}`", p.container, p.key)
    };
    let prefix = if p.prefix.is_empty() {
        "no prefix stripped".to_string()
    } else {
        format!("prefix `{}` stripped", p.prefix)
    };
    let how = match (p.choice, p.accepted) {
        (Choice::Explicit, true) => "chosen with --key; a DINOv3 key set",
        (Choice::Explicit, false) => "chosen with --key; NOT a DINOv3 key set",
        (Choice::Found, _) => "the only DINOv3 key set in the file",
        (Choice::Only, _) => "the only dict of tensors; NOT a DINOv3 key set",
    };
    format!("{place}, {prefix} ({how})")
}

pub fn table(l: &Listing) -> String {
    let p = &l.provenance;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checkpoint  {} ({}, archive `{}`, {}-endian{})",
        p.path,
        bytesize::ByteSize(p.file_bytes),
        p.archive,
        p.byteorder,
        p.format_version
            .as_ref()
            .map_or(String::new(), |v| format!(", format version {v}"))
    );
    let _ = writeln!(out, "state dict  {}", found_words(p));
    let dtypes: Vec<String> = p.dtypes.iter().map(|(d, n)| format!("{d} ×{n}")).collect();
    let _ = writeln!(
        out,
        "tensors     {} ({} of values): {}",
        p.tensors,
        bytesize::ByteSize(p.tensor_bytes),
        dtypes.join(", ")
    );
    if p.left_out > 0 {
        let _ = writeln!(out, "left out    {} tensors outside the prefix", p.left_out);
    }
    if !p.skipped.is_empty() {
        let _ = writeln!(out, "not tensors {}", p.skipped.join(", "));
    }
    let width = l
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "\n{:<width$}  {:<7} shape", "name", "dtype");
    for t in &l.tensors {
        let layout = if t.contiguous {
            String::new()
        } else {
            format!("  (strides {:?}, offset {})", t.strides, t.storage_offset)
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<7} {:?}{layout}",
            t.name, t.dtype, t.shape
        );
    }
    out
}
