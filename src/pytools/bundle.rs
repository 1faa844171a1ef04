//! One embedded tool as a single self-contained Python file: what `dinodiff tools NAME` writes
//! and what `capture eqx --model` runs.
//!
//! Contract: the file is the prelude (`prelude.py`) with the tool's script and the modules it
//! imports ([`super::Tool::modules`]) carried as string literals (JSON string literals, which
//! Python reads as the same text), plus dinodiff's stage and variant vocabulary as JSON when
//! the tool imports `vocabulary`. Run as a script, the prelude refuses a Python older than
//! [`super::MIN_PYTHON`] (exit 2; the prelude's own syntax is old enough for any Python to read),
//! puts an importer of the carried modules first on `sys.meta_path` and runs the script as
//! `__main__`; tracebacks name `<dinodiff bundle>/FILE.py` with its lines. Nothing is read from
//! or written beside the file.

use super::Tool;
use std::fmt::Write as _;

const PRELUDE: &str = include_str!("prelude.py");

/// The self-contained script of `tool`.
pub fn render(tool: Tool) -> String {
    let modules = tool.modules();
    let mut sources = String::new();
    for module in &modules {
        let name = module.file.strip_suffix(".py").unwrap_or(module.file);
        let _ = writeln!(
            sources,
            "    {}: {},",
            literal(name),
            literal(module.source)
        );
    }
    let mut vocabulary = String::new();
    if modules.iter().any(|m| m.file == "vocabulary.py") {
        let stages = serde_json::to_string(&crate::vocabulary::stages()).unwrap_or_default();
        let variants = serde_json::to_string(&crate::vocabulary::variants()).unwrap_or_default();
        let _ = writeln!(vocabulary, "    \"stages\": {},", literal(&stages));
        let _ = writeln!(vocabulary, "    \"variants\": {},", literal(&variants));
    }
    let module_names: Vec<&str> = modules.iter().map(|m| m.file).collect();
    let needs: Vec<String> = tool
        .info
        .needs
        .iter()
        .map(|p| super::pinned_in(tool.info.requirements, p))
        .collect();
    let (major, minor) = tool.info.min_python;
    [
        ("@@NAME@@", tool.info.name.to_string()),
        ("@@FILE@@", tool.file.file.to_string()),
        ("@@ABOUT@@", tool.info.about.to_string()),
        ("@@VERSION@@", env!("CARGO_PKG_VERSION").to_string()),
        ("@@MODULES@@", module_names.join(", ")),
        ("@@NEEDS@@", needs.join(" ")),
        ("@@MIN_PYTHON_TUPLE@@", format!("{major}, {minor}")),
        ("@@MIN_PYTHON@@", format!("{major}.{minor}")),
        ("@@SOURCES@@", sources.trim_end().to_string()),
        ("@@VOCABULARY@@", vocabulary.trim_end().to_string()),
        ("@@MAIN@@", literal(tool.file.source)),
    ]
    .iter()
    .fold(PRELUDE.to_string(), |text, (mark, value)| {
        text.replace(mark, value)
    })
}

/// A Python string literal of `text`: a JSON string is one (its escapes `\" \\ \/ \b \f \n \r
/// \t \uXXXX` mean the same in Python; other characters stand as themselves, UTF-8).
fn literal(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_is_filled() {
        for tool in Tool::all() {
            let text = render(tool);
            assert!(!text.contains("@@"), "{}", tool.info.name);
            assert!(text.starts_with("#!/usr/bin/env python3\n"));
        }
    }

    #[test]
    fn the_bundle_carries_the_modules_and_the_vocabulary_it_needs() {
        let text = render(Tool::named("eqx-capture").unwrap());
        assert!(text.contains("\n    \"eqx_model\": \""));
        assert!(text.contains("\n    \"vocabulary\": \""));
        assert!(text.contains("\n    \"variants\": \"{\\\"schema\\\":\\\"dinodiff.variants/1\\\""));
        assert!(!text.contains("\n    \"timm_capture\": "));
        assert!(text.contains("# eqx_capture.py: record an Equinox DINOv3 run"));
    }

    #[test]
    fn literals_escape_what_python_would_misread() {
        assert_eq!(literal("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
