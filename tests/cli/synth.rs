//! `dinodiff synth`, and the atomic dump writer under SIGKILL, SIGINT and SIGTERM (exercised through
//! `synth`).

use crate::common::{diff_json, dinodiff, dinodiff_bin};
use std::time::{Duration, Instant};

#[test]
fn synth_pairs_share_the_input_and_drift_where_told() {
    let dir = tempfile::tempdir().unwrap();
    dinodiff()
        .current_dir(dir.path())
        .args([
            "synth",
            "--variant",
            "vits16",
            "--image-size",
            "64",
            "-o",
            "a.st",
        ])
        .assert()
        .code(0);
    dinodiff()
        .current_dir(dir.path())
        .args([
            "synth",
            "--variant",
            "dinov3_vits16_pretrain_lvd1689m",
            "--image-size",
            "64",
        ])
        .args([
            "--noise",
            "1e-7",
            "--drift",
            "blocks.3.mlp=1e-2",
            "-o",
            "b.st",
        ])
        .assert()
        .code(0);
    let json = diff_json(dir.path(), &[], 1);
    assert_eq!(json["input"]["status"], "match");
    assert_eq!(
        json["pairs"][json["first_over"].as_u64().unwrap() as usize]["name"],
        "blocks.3.mlp"
    );
    dinodiff()
        .current_dir(dir.path())
        .args(["synth", "--drift", "blocks.12.mlp=1", "-o", "c.st"])
        .assert()
        .code(2)
        .stderr("error: --drift names \"blocks.12.mlp\", which is not a stage of vits16 (depth 12); see docs/stages.md\n");
}

/// Starts `synth` of a ViT-L/16 (~400 MB, long enough to be caught while writing) in `dir` and
/// returns once its data file beside `big.st` has bytes in it.
fn synth_caught_writing(dir: &std::path::Path) -> std::process::Child {
    let mut child = std::process::Command::new(dinodiff_bin())
        .current_dir(dir)
        .args(["synth", "--variant", "vitl16", "-o", "big.st"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let writing = loop {
        let partial = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(".big.st.data-"));
        if let Some(p) = partial
            && p.metadata().map(|m| m.len() > 0).unwrap_or(false)
        {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(writing, "never saw the writer at work");
    child
}

#[test]
fn a_writer_killed_mid_dump_leaves_no_file_at_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = synth_caught_writing(dir.path());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        !dir.path().join("big.st").exists(),
        "a killed writer left a file at the target path"
    );
}

/// SIGINT and SIGTERM end the run by that signal (a shell reports 130 and 143,
/// docs/exit-codes.md) and leave nothing: neither the target nor a temporary beside it.
#[test]
fn an_interrupted_writer_removes_its_temporary_files() {
    use std::os::unix::process::ExitStatusExt;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = synth_caught_writing(dir.path());
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "signal {signal} left {left:?}");
    }
}
