#!/usr/bin/env bash
# Coverage-guided fuzzing of dinodiff's parsers of user files with AFL++ (cargo-afl), on stable
# Rust. The harnesses are the crate fuzz/ (outside dinodiff's build); docs/fuzzing.md says more.
#
#   tools/fuzz.sh build                  install cargo-afl if missing, build the harnesses
#   tools/fuzz.sh run TARGET [SECONDS]   fuzz one target (default 600 s) from fuzz/corpus/TARGET
#   tools/fuzz.sh all [SECONDS]          fuzz every target in turn, JOBS at a time (default 1)
#   tools/fuzz.sh stats                  per target: executions, time, edges, crashes, hangs
#   tools/fuzz.sh replay TARGET FILE...  run files through a harness outside AFL (see a panic)
#
# Targets: dump npz eqx onnx checkpoint name_map. Findings land in fuzz/out/TARGET/default/{crashes,
# hangs}; each becomes a fix, a unit test beside the parser, and a file in
# fuzz/regressions/TARGET/ (replayed by `cargo test`, tests/cli/fuzz_corpus.rs). Environment:
#   AFL_MEM_MB   memory limit of the target in MB (default 1024: a hostile size that makes
#                dinodiff allocate more is a crash to fix)
#   AFL_TIMEOUT  per-input time limit in ms (default 2000)
#   JOBS         targets fuzzed at once by `all` (default 1)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
targets=(dump npz eqx onnx checkpoint name_map)
cargo_afl_version=0.18.2

say() { printf '\033[1m[fuzz]\033[0m %s\n' "$*" >&2; }
die() { printf '[fuzz] error: %s\n' "$*" >&2; exit 2; }

is_target() { local t; for t in "${targets[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

# cargo-afl builds AFL++ from the crate's sources when it is installed (into
# ~/.local/share/afl.rs, per rustc version); installing is idempotent.
ensure_cargo_afl() {
    if ! cargo afl --version 2>/dev/null | grep -q "$cargo_afl_version"; then
        say "cargo install cargo-afl --version $cargo_afl_version --locked (builds AFL++, ~1 min)"
        cargo install --quiet cargo-afl --version "$cargo_afl_version" --locked
    fi
    cargo afl config --build >/dev/null 2>&1 || true # no-op once AFL++ is built for this rustc
}

build() {
    ensure_cargo_afl
    say "cargo afl build --release (fuzz/)"
    (cd fuzz && cargo afl build --release --quiet)
}

run_target() {
    local target=$1 seconds=${2:-600} out resume=()
    is_target "$target" || die "unknown target '$target' (one of: ${targets[*]})"
    out=fuzz/out/$target
    # A second run continues the first one's queue.
    [[ -f $out/default/fuzzer_stats ]] && resume=(-i -) || resume=(-i "fuzz/corpus/$target")
    say "fuzzing $target for ${seconds}s -> $out"
    mkdir -p "$out"
    # Each harness writes its input to a scratch file: keep those in memory when /dev/shm exists.
    [[ -d /dev/shm ]] && export TMPDIR=/dev/shm
    AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_AUTORESUME=1 RAYON_NUM_THREADS=1 \
        cargo afl fuzz "${resume[@]}" -o "$out" -x "fuzz/dict/$target.dict" \
        -m "${AFL_MEM_MB:-1024}" -t "${AFL_TIMEOUT:-2000}" -V "$seconds" \
        -- "fuzz/target/release/$target" >"$out/afl.log" 2>&1 ||
        { tail -20 "$out/afl.log" >&2; die "afl-fuzz failed on $target (log: $out/afl.log)"; }
}

stats() {
    printf '%-11s %12s %8s %9s %7s %8s %8s %7s %6s\n' target execs "time(s)" execs/s edges "map" corpus crashes hangs
    local t f
    for t in "${targets[@]}"; do
        f=fuzz/out/$t/default/fuzzer_stats
        [[ -f $f ]] || { printf '%-11s (not run)\n' "$t"; continue; }
        awk -v t="$t" -F' *: *' '{ s[$1] = $2 } END {
            printf "%-11s %12s %8s %9s %7s %8s %8s %7s %6s\n", t, s["execs_done"], s["run_time"],
                s["execs_per_sec"], s["edges_found"] "/" s["total_edges"], s["bitmap_cvg"],
                s["corpus_count"], s["saved_crashes"], s["saved_hangs"] }' "$f"
    done
}

cmd=${1:-}
shift || true
case "$cmd" in
build) build ;;
run)
    [[ $# -ge 1 ]] || die "usage: tools/fuzz.sh run TARGET [SECONDS]"
    run_target "$@"
    ;;
all)
    seconds=${1:-600}
    jobs=${JOBS:-1}
    for t in "${targets[@]}"; do
        run_target "$t" "$seconds" &
        while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
    done
    wait
    stats
    ;;
stats) stats ;;
replay)
    [[ $# -ge 2 ]] || die "usage: tools/fuzz.sh replay TARGET FILE..."
    target=$1
    shift
    for f in "$@"; do
        say "$target < $f"
        "fuzz/target/release/$target" <"$f"
    done
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    [[ -z $cmd ]] || exit 2
    ;;
esac
