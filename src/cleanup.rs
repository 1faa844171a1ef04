//! Temporary files that an interrupted run must not leave behind (SIGINT, SIGTERM, SIGHUP).
//!
//! Contract:
//! - [`register`] makes a temporary file or directory and records its path, both under one lock;
//!   the returned [`Registration`] forgets the path when dropped. Its owner still removes the
//!   temporary itself (a `tempfile::NamedTempFile` on drop): keep the registration *after* the
//!   temporary in a struct, so that fields drop in that order and the path is removed before it
//!   is forgotten.
//! - [`Registration::commit`] runs what makes a temporary permanent (the rename of a finished
//!   dump onto its target) under the same lock, and forgets the path.
//! - [`install_signal_handlers`] (the binary calls it once, before any work) installs handlers for
//!   SIGINT, SIGTERM and SIGHUP; a signal the process started with ignored stays ignored. The
//!   handler only writes to a self-pipe (signal-hook: async-signal-safe); a watcher thread wakes,
//!   takes the lock, removes every recorded path (a directory with its contents) and ends the
//!   process by the same signal with its default action, so that the parent sees it killed by the
//!   signal and a shell reports 128 + N: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP). Nothing is
//!   printed: stderr may be a pipe nobody reads.
//! - Because registering and committing take the lock that the watcher keeps until the process
//!   ends, a signal is handled either before a temporary exists or after its path is recorded,
//!   and either before a commit (the temporary is removed, the target never appears) or after it
//!   (the target is complete, nothing is left to remove).
//! - Without the handlers (a library user that does not install them) registering only records
//!   paths. SIGKILL cannot be caught: a killed process may leave temporaries (never a target).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The paths to remove when a signal ends the process, by registration id.
struct Registry {
    next: u64,
    paths: BTreeMap<u64, PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    paths: BTreeMap::new(),
});

/// The registry, also after a panic elsewhere held it (the paths stay valid).
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The record of one temporary path; dropping it forgets the path (see the module docs).
#[derive(Debug)]
#[must_use = "dropping the registration forgets the path at once"]
pub struct Registration {
    id: u64,
}

/// Runs `make` (which creates a temporary) and records the path `path_of` gives, both under the
/// registry's lock: no signal is handled between the two.
pub fn register<T, E>(
    make: impl FnOnce() -> Result<T, E>,
    path_of: impl FnOnce(&T) -> &Path,
) -> Result<(T, Registration), E> {
    let mut registry = registry();
    let temporary = make()?;
    let id = registry.next;
    registry.next += 1;
    registry.paths.insert(id, path_of(&temporary).to_path_buf());
    Ok((temporary, Registration { id }))
}

impl Registration {
    /// Runs `op` (e.g. the rename of the temporary onto its target) under the registry's lock,
    /// then forgets the path: a signal is handled wholly before or wholly after `op`.
    pub fn commit<R>(self, op: impl FnOnce() -> R) -> R {
        let mut registry = registry();
        let result = op();
        registry.paths.remove(&self.id);
        std::mem::forget(self);
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().paths.remove(&self.id);
    }
}

/// Removes each recorded path, a directory with its contents; errors are ignored (the path may
/// be gone already). Returns how many paths were recorded.
fn remove_all(registry: &Registry) -> usize {
    for path in registry.paths.values() {
        let removed = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            _ => std::fs::remove_file(path),
        };
        drop(removed);
    }
    registry.paths.len()
}

/// The signals that end a run and get its temporaries removed.
#[cfg(unix)]
const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// Installs the handlers and starts the watcher thread (see the module docs). Call it once, from
/// the binary; a second call, or a failure to install, leaves the signals' actions as they were.
#[cfg(unix)]
pub fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let caught: Vec<i32> = SIGNALS.into_iter().filter(|&s| !ignored(s)).collect();
        // The watcher registers the handlers itself and says when it has: if it cannot be
        // started, no handler swallows a signal that nothing would act on.
        let (ready, installed) = std::sync::mpsc::channel();
        let watcher = std::thread::Builder::new()
            .name("dinodiff-signals".into())
            .spawn(move || match signal_hook::iterator::Signals::new(&caught) {
                Ok(mut signals) => {
                    let _ = ready.send(());
                    if let Some(signal) = signals.forever().next() {
                        remove_all_and_die(signal);
                    }
                }
                Err(_) => {
                    let _ = ready.send(());
                }
            });
        if watcher.is_ok() {
            let _ = installed.recv();
        }
    });
}

#[cfg(not(unix))]
pub fn install_signal_handlers() {}

/// Whether `signal` is ignored now (as `nohup` or a shell's background job may start us).
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Removes the recorded temporaries, then ends the process by `signal` (default action), still
/// holding the lock so that no commit can follow the removal.
#[cfg(unix)]
fn remove_all_and_die(signal: i32) -> ! {
    let registry = registry();
    remove_all(&registry);
    drop(signal_hook::low_level::emulate_default_handler(signal));
    // Only if the default action did not end the process: the shell's code for it.
    std::process::exit(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_forgets_its_path_when_dropped_or_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (file, registration) =
            register(|| tempfile::NamedTempFile::new_in(dir.path()), |f| f.path()).unwrap();
        let path = file.path().to_path_buf();
        assert!(registry().paths.values().any(|p| *p == path));
        drop(file);
        drop(registration);
        assert!(!registry().paths.values().any(|p| *p == path));

        let (file, registration) =
            register(|| tempfile::NamedTempFile::new_in(dir.path()), |f| f.path()).unwrap();
        let path = file.path().to_path_buf();
        let target = dir.path().join("done");
        registration.commit(|| file.persist(&target)).unwrap();
        assert!(!registry().paths.values().any(|p| *p == path));
        assert!(target.is_file());
    }

    #[test]
    fn a_failed_creation_records_nothing() {
        let missing = Path::new("/nonexistent-dinodiff-dir");
        let made = register(|| tempfile::NamedTempFile::new_in(missing), |f| f.path());
        assert!(made.is_err());
        assert!(!registry().paths.values().any(|p| p.starts_with(missing)));
    }

    #[test]
    fn removing_takes_files_and_directories_with_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tmp");
        std::fs::write(&file, b"x").unwrap();
        let sub = dir.path().join("links");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("m.onnx"), b"y").unwrap();
        let gone = dir.path().join("never-made");
        let registry = Registry {
            next: 3,
            paths: BTreeMap::from([(0, file.clone()), (1, sub.clone()), (2, gone)]),
        };
        assert_eq!(remove_all(&registry), 3);
        assert!(!file.exists() && !sub.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
