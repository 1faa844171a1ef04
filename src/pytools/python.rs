//! The user's Python, for the embedded tools: which interpreter, whether it can run a tool, and
//! running it.
//!
//! Contract:
//! - [`Interpreter::find`]: `--python` when given, else `DINODIFF_PYTHON` when set, else `python3`
//!   on `PATH`; a name without a `/` is looked up on `PATH`. A missing one is an error naming
//!   where it came from and what to do;
//! - [`Interpreter::probe`] runs it once (`-c`, a probe written so that any Python, 2.7 too, can
//!   run it) and refuses, naming what to do: a program that does not answer as Python, a Python
//!   older than the tool's `min_python` ([`super::MIN_PYTHON`] but for equimo's 3.12), and every package of the tool's `needs` that it cannot
//!   find (`importlib.util.find_spec`, which does not import it), with the `pip install` of their
//!   pinned versions in the tool's requirements file ([`super::pinned_in`]);
//! - [`Interpreter::run`] runs a script with the child's stdout and stderr both on our stderr
//!   (progress reaches the user as it comes; our stdout stays clean), stdin closed,
//!   `PYTHONUNBUFFERED=1`, `DINODIFF_BIN` set to this binary (the tools read the stage and variant
//!   vocabulary from it) and, on Linux, the child ended by SIGTERM if dinodiff dies first (a
//!   signal that ends dinodiff, which removes the script's temporary directory, does not leave
//!   the recorder running).

use super::{MIN_PYTHON, Tool, pinned_in};
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the interpreter came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    Path,
}

#[derive(Debug, Clone)]
pub struct Interpreter {
    pub path: PathBuf,
    pub origin: Origin,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `3.11.7`
    pub version: String,
    /// The packages' versions, in `needs` order (`None`: found, version unknown).
    pub packages: Vec<(String, Option<String>)>,
}

pub const ENV_PYTHON: &str = "DINODIFF_PYTHON";

/// Runs on any Python: prints {"version": [...], "executable", "missing": [...], "found": {...}}
/// for the package names given as arguments (checked on Python 3 only).
const PROBE: &str = r#"
import sys, json
out = {"version": list(sys.version_info[:3]), "executable": sys.executable, "missing": [], "found": {}}
if sys.version_info[0] >= 3:
    import importlib.util
    try:
        from importlib.metadata import version
    except ImportError:
        version = None
    for name in sys.argv[1:]:
        try:
            spec = importlib.util.find_spec(name)
        except Exception:
            spec = None
        if spec is None:
            out["missing"].append(name)
            continue
        try:
            out["found"][name] = version(name) if version else None
        except Exception:
            out["found"][name] = None
sys.stdout.write(json.dumps(out))
"#;

impl Interpreter {
    /// `--python` (`flag`), else `DINODIFF_PYTHON`, else `python3` on `PATH`.
    pub fn find(flag: Option<&Path>) -> Result<Interpreter> {
        let env = std::env::var_os(ENV_PYTHON).filter(|v| !v.is_empty());
        let (given, origin) = match (flag, env) {
            (Some(path), _) => (path.as_os_str().to_owned(), Origin::Flag),
            (None, Some(value)) => (value, Origin::Env),
            (None, None) => (OsString::from("python3"), Origin::Path),
        };
        let shown = Path::new(&given).display().to_string();
        let how = "pass a Python that has JAX with --python PATH or set DINODIFF_PYTHON";
        let path = if Path::new(&given).components().count() > 1 {
            let path = PathBuf::from(&given);
            if !path.is_file() {
                bail!("{}: no such file; {how}", origin_words(&origin, &shown));
            }
            path
        } else {
            match on_path(&given) {
                Some(path) => path,
                None => bail!(
                    "{}: not found on PATH; install Python >= {}.{} or {how}",
                    origin_words(&origin, &shown),
                    MIN_PYTHON.0,
                    MIN_PYTHON.1
                ),
            }
        };
        Ok(Interpreter { path, origin })
    }

    /// Checks the interpreter and the packages `tool` needs (see the module docs).
    pub fn probe(&self, tool: Tool) -> Result<Probe> {
        let shown = self.path.display();
        let out = Command::new(&self.path)
            .arg("-c")
            .arg(PROBE)
            .args(tool.info.needs)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run the Python {shown}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let answer: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) if out.status.success() => v,
            _ => bail!(
                "{shown} does not run as Python (`{shown} -c <probe>` exited with {}{}); pass a \
                 Python >= {}.{} with --python PATH",
                out.status,
                last_line(&stderr).map_or(String::new(), |l| format!(": {l}")),
                MIN_PYTHON.0,
                MIN_PYTHON.1
            ),
        };
        let version: Vec<u64> = answer["version"]
            .as_array()
            .map(|v| v.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default();
        let version_text = version
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let (major, minor) = (tool.info.min_python.0 as u64, tool.info.min_python.1 as u64);
        if version.len() < 2 || (version[0], version[1]) < (major, minor) {
            bail!(
                "{shown} is Python {version_text}; {} needs Python >= {major}.{minor} ({}): pass a \
                 newer one with --python PATH or DINODIFF_PYTHON",
                tool.file.file,
                tool.info.min_python_why
            );
        }
        let missing: Vec<&str> = answer["missing"]
            .as_array()
            .map(|m| m.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if !missing.is_empty() {
            let pins: Vec<String> = missing
                .iter()
                .map(|p| pinned_in(tool.info.requirements, p))
                .collect();
            bail!(
                "{shown} (Python {version_text}) lacks {} that {} imports: {}. Install {} into \
                 that Python's environment: {shown} -m pip install {}",
                if missing.len() == 1 {
                    "a package"
                } else {
                    "packages"
                },
                tool.file.file,
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                pins.join(" ")
            );
        }
        let packages = tool
            .info
            .needs
            .iter()
            .map(|p| {
                let v = answer["found"][*p].as_str().map(str::to_string);
                (p.to_string(), v)
            })
            .collect();
        Ok(Probe {
            version: version_text,
            packages,
        })
    }

    /// Runs `python script args…` (see the module docs); an error when it does not succeed.
    pub fn run(&self, script: &Path, args: &[OsString]) -> Result<()> {
        let mut command = Command::new(&self.path);
        command
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stderr_handle()?)
            .stderr(Stdio::inherit())
            .env("PYTHONUNBUFFERED", "1");
        if let Ok(exe) = std::env::current_exe() {
            command.env("DINODIFF_BIN", exe);
        }
        end_with_parent(&mut command);
        let status = command
            .status()
            .with_context(|| format!("cannot run the Python {}", self.path.display()))?;
        if status.success() {
            return Ok(());
        }
        let file = script.file_name().unwrap_or_default().to_string_lossy();
        match status.code() {
            Some(code) => bail!(
                "{file} failed (exit {code}{}); its message is above",
                if code == 1 {
                    ": a bug, its traceback is above"
                } else {
                    ""
                }
            ),
            None => bail!(
                "{file} was ended by a signal ({status}); if it was the out-of-memory killer, \
                 free memory or record on a larger machine"
            ),
        }
    }
}

fn origin_words(origin: &Origin, shown: &str) -> String {
    match origin {
        Origin::Flag => format!("--python {shown}"),
        Origin::Env => format!("{ENV_PYTHON}={shown}"),
        Origin::Path => shown.to_string(),
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().find(|l| !l.trim().is_empty())
}

/// The first executable file called `name` in a directory of `PATH`.
fn on_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// A handle on our stderr for the child's stdout.
#[cfg(unix)]
fn stderr_handle() -> Result<Stdio> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the Python tool's output")?;
    Ok(Stdio::from(fd))
}

#[cfg(not(unix))]
fn stderr_handle() -> Result<Stdio> {
    Ok(Stdio::inherit())
}

/// On Linux, the child gets SIGTERM when dinodiff's process ends.
#[cfg(target_os = "linux")]
fn end_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn end_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_python_is_named_with_its_origin() {
        let e = Interpreter::find(Some(Path::new("/no/such/python")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--python /no/such/python: no such file; pass a Python that has JAX"),
            "{e}"
        );
        let e = Interpreter::find(Some(Path::new("python-that-is-not-anywhere")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "--python python-that-is-not-anywhere: not found on PATH; install Python >= 3.11"
            ),
            "{e}"
        );
    }
}
