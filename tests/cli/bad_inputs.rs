//! Malformed and unreadable inputs: each pins the exact error text and exit code 2, for `inspect`
//! and for `diff` (either side), and none may panic.

use crate::common::{dinodiff, dinodiff_bin};
use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// A raw safetensors file: 8-byte little-endian header length, header, data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    /// A valid two-tensor file to put on the other side of a diff.
    fn good(&self) -> PathBuf {
        self.file(
            "good.st",
            &raw(
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        )
    }
}

/// What every refusal of a file that is not a dump ends with: what to pass instead.
const NOT_A_DUMP: &str = "; pass a safetensors dump (from dinodiff capture, prep or synth, or \
                          safetensors' save_file), or capture it again if this one was cut short";

/// [`assert_refused_as`] for a file that was read and is not a dump: `problem` and the hint.
fn assert_refused(case: &Case, path: &Path, problem: &str) {
    assert_refused_as(case, path, &format!("{problem}{NOT_A_DUMP}"));
}

/// Runs inspect on `path` and diff with it on each side; all must fail with `error: PATH:
/// MESSAGE` on stderr.
fn assert_refused_as(case: &Case, path: &Path, message: &str) {
    let expected = format!("error: {}: {message}\n", path.display());
    dinodiff()
        .arg("inspect")
        .arg(path)
        .assert()
        .code(2)
        .stdout("")
        .stderr(expected.clone());
    let good = case.good();
    dinodiff()
        .arg("diff")
        .arg(path)
        .arg(&good)
        .assert()
        .code(2)
        .stdout("")
        .stderr(expected.clone());
    dinodiff()
        .arg("diff")
        .arg(&good)
        .arg(path)
        .assert()
        .code(2)
        .stdout("")
        .stderr(expected);
}

#[test]
fn empty_file() {
    let c = Case::new();
    let p = c.file("empty.st", b"");
    assert_refused(
        &c,
        &p,
        "empty file (0 bytes); a safetensors dump starts with an 8-byte header length",
    );
}

#[test]
fn shorter_than_the_length_field() {
    let c = Case::new();
    let p = c.file("short.st", b"\x05\x00\x00");
    assert_refused(
        &c,
        &p,
        "file is 3 bytes, too short for a safetensors dump (at least 8 bytes of header length)",
    );
}

#[test]
fn truncated_data() {
    let c = Case::new();
    let full = raw(
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
        &[0; 32],
    );
    let p = c.file("truncated.st", &full[..full.len() - 10]);
    assert_refused(
        &c,
        &p,
        "tensor \"b\": data_offsets [16, 32] reach past the end of the data area (22 bytes): the file is truncated",
    );
}

#[test]
fn header_length_beyond_the_file() {
    let c = Case::new();
    let mut bytes = raw(r#"{}"#, b"");
    bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
    let p = c.file("longheader.st", &bytes);
    assert_refused(
        &c,
        &p,
        "header length 1000 reaches past the end of the file (10 bytes): the file is truncated or not a safetensors file",
    );
}

#[test]
fn header_not_json() {
    let c = Case::new();
    let p = c.file("notjson.st", &raw("{this is not json}", b""));
    assert_refused(
        &c,
        &p,
        "header is not valid JSON: key must be a string at line 1 column 2",
    );
}

#[test]
fn overlapping_offsets() {
    let c = Case::new();
    let p = c.file(
        "overlap.st",
        &raw(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            &[0; 24],
        ),
    );
    assert_refused(&c, &p, "tensors \"a\" [0, 16] and \"b\" [8, 24] overlap");
}

#[test]
fn offsets_out_of_bounds() {
    let c = Case::new();
    let p = c.file(
        "oob.st",
        &raw(
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[100,104]}}"#,
            &[0; 8],
        ),
    );
    assert_refused(
        &c,
        &p,
        "tensor \"a\": data_offsets [100, 104] reach past the end of the data area (8 bytes): the file is truncated",
    );
}

#[test]
fn byte_count_not_matching_dtype_and_shape() {
    let c = Case::new();
    let p = c.file(
        "count.st",
        &raw(
            r#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    assert_refused(
        &c,
        &p,
        "tensor \"a\": F16 [2, 3] needs 12 bytes but data_offsets [0, 8] span 8",
    );
}

#[test]
fn not_a_safetensors_file() {
    let c = Case::new();
    let p = c.file(
        "image.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01",
    );
    assert_refused(
        &c,
        &p,
        "not a safetensors file: its first 8 bytes give a header length of 727905341920923785 bytes, over the 100000000-byte limit",
    );
}

#[test]
fn plausible_length_but_no_json_object() {
    let c = Case::new();
    let p = c.file("text.st", &raw("[1, 2, 3]", b""));
    assert_refused(
        &c,
        &p,
        "not a safetensors file: the header does not start with '{'",
    );
}

#[test]
fn unknown_dtype_and_gap() {
    let c = Case::new();
    let p = c.file(
        "dtype.st",
        &raw(
            r#"{"a":{"dtype":"F17","shape":[1],"data_offsets":[0,2]}}"#,
            &[0; 2],
        ),
    );
    assert_refused(&c, &p, "tensor \"a\": unknown dtype \"F17\"");
    let p = c.file(
        "gap.st",
        &raw(
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
            &[0; 4],
        ),
    );
    assert_refused(
        &c,
        &p,
        "2 unused bytes before tensor \"a\" (data_offsets [2, 4]): safetensors requires tensors to be contiguous",
    );
}

#[test]
fn a_directory() {
    let c = Case::new();
    let d = c.dir.path().join("adir.st");
    std::fs::create_dir(&d).unwrap();
    assert_refused(&c, &d, "is a directory, not a dump file");
}

#[test]
fn a_missing_file() {
    let c = Case::new();
    let p = c.dir.path().join("nowhere.st");
    assert_refused_as(&c, &p, "no such file; check the path");
}

#[test]
fn an_unreadable_file() {
    let c = Case::new();
    let p = c.good();
    let locked = c.dir.path().join("locked.st");
    std::fs::copy(&p, &locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let expected = format!(
        "error: {}: cannot read: Permission denied (os error 13); check the file's permissions\n",
        locked.display()
    );
    // Root reads any file, so as root the command runs as nobody (setpriv, util-linux).
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        })
        .unwrap_or(false);
    let mut bin = dinodiff_bin();
    let mut cmd = if is_root {
        // nobody must reach the file and the binary: the checkout may sit under a private
        // home directory, so run a copy from the (world-readable) temporary directory.
        std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = c.dir.path().join("dinodiff");
        std::fs::copy(&bin, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin = copy;
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        cmd
    } else {
        Command::new(&bin)
    };
    cmd.arg("inspect")
        .arg(&locked)
        .assert()
        .code(2)
        .stdout("")
        .stderr(expected);
}

#[test]
fn manifest_naming_a_tensor_the_file_lacks() {
    let c = Case::new();
    let manifest = r#"{\"format_version\":1,\"source\":\"meta\",\"dinodiff_version\":\"0\",\"command_line\":[],\"created\":\"\",\"host\":\"\",\"order\":[\"a\",\"ghost\"],\"tensors\":{}}"#;
    let header = format!(
        r#"{{"__metadata__":{{"dinodiff.manifest":"{manifest}"}},"a":{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}}"#
    );
    let p = c.file("ghost.st", &raw(&header, &[7]));
    assert_refused(
        &c,
        &p,
        "the manifest lists tensor \"ghost\", which the file does not hold",
    );
}

#[test]
fn newer_format_version_is_refused_with_advice() {
    let c = Case::new();
    let manifest = r#"{\"format_version\":99}"#;
    let header = format!(r#"{{"__metadata__":{{"dinodiff.manifest":"{manifest}"}}}}"#);
    let p = c.file("future.st", &raw(&header, b""));
    assert_refused_as(
        &c,
        &p,
        "dump format version 99 is newer than this dinodiff reads (1); upgrade dinodiff",
    );
}

/// An Equinox recording (761 bytes, fuzz/regressions/npz/) whose bf16 array's npy header and
/// zip entry both claim 4 GB: refused as cut short, under a 1.5 GB address-space limit (dinodiff
/// once reserved the claimed 4 GB up front and aborted).
#[test]
fn npz_claiming_4gb_is_refused_without_reserving_it() {
    let npz =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/npz/bf16_claims_4gb.npz");
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "ulimit -v 1500000 && exec '{}' capture eqx --npz '{}' -o '{}'",
        dinodiff_bin().display(),
        npz.display(),
        out.path().join("o.st").display()
    );
    let assert = Command::new("sh").args(["-c", &script]).assert().code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(
        stderr,
        format!(
            "error: {}: array \"blocks[0].ls1\" is cut short (8 of 4000000000 bytes); record the \
             run again with tools/eqx_capture.py\n",
            npz.display()
        )
    );
    assert!(!out.path().join("o.st").exists());
}
