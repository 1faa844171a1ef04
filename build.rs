//! With the `torch` feature: bake libtorch's directory into the binary's rpath (so it runs without
//! LD_LIBRARY_PATH) and record the libtorch version it was built against. Without it: nothing.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // The torch wheel keeps its version beside lib/: torch/version.py, `__version__ = '2.13.0+cu130'`.
    let version_py = Path::new(&lib_dir).join("..").join("version.py");
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rerun-if-changed={}", version_py.display());
    println!("cargo:rustc-env=DINODIFF_LIBTORCH_VERSION={version}");
}
