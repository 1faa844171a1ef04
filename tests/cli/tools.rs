//! `dinodiff tools`: the listing of the embedded Python helpers, and writing one out.

use crate::common::{dinodiff, stderr_of, stdout_of};

#[test]
fn the_listing_names_every_tool_and_what_it_needs() {
    let out = stdout_of(&dinodiff().arg("tools").assert().code(0));
    insta::assert_snapshot!(out);
}

#[test]
fn a_tool_is_written_to_stdout_or_to_an_executable_file() {
    let text = stdout_of(&dinodiff().args(["tools", "eqx-capture"]).assert().code(0));
    assert!(
        text.starts_with("#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\n# eqx_capture.py: ")
    );
    // The recorder's own source is carried verbatim (as a string literal) after the prelude.
    let source = include_str!("../../tools/eqx_capture.py");
    let literal = serde_json::to_string(source).unwrap();
    assert!(text.contains(&literal));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.py");
    let a = dinodiff()
        .args(["tools", "eqx_capture.py", "-o"])
        .arg(&path)
        .assert()
        .code(0);
    assert!(stderr_of(&a).starts_with(&format!("wrote {} (", path.display())));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rec.py"]);
}

#[test]
fn output_without_a_tool_name_is_a_usage_error() {
    let a = dinodiff().args(["tools", "-o", "x.py"]).assert().code(2);
    assert!(stderr_of(&a).contains("<NAME>"), "{}", stderr_of(&a));
}
