#!/usr/bin/env bash
# The main job (README, first command), run by `tools/dev main` after set-up: the seed's
# Meta ⇔ Equinox ⇔ ONNX workflow on a DINOv3 ViT-S/16 with deterministic random weights.
#   1. a random-weight ViT-S/16 checkpoint in Meta's exact format (seed 0);
#   2. the checkpoint mapped onto the Equinox DINOv3 of the jax2onnx wheel (tools/meta_to_eqx.py);
#   3. that Equinox model exported to ONNX with jax2onnx (tools/export_onnx.py);
#   4. the model input, from the photo matplotlib ships (grace_hopper.jpg), Meta's transform;
#   5. the three captures: `capture meta` (libtorch, native), `capture eqx --model` (the Equinox
#      run recorded by the binary's embedded tools/eqx_capture.py with the venv's Python, then
#      imported), `capture onnx` (ONNX Runtime);
#   6. the independent check of the Meta side: timm's DINOv3 port, hooked (max|Δ| 0 expected);
#      and of the ONNX headline: a default onnxruntime session gives the same CLS max|Δ|;
#   7. `dinodiff diff meta.st eqx.st onnx.st`: the triangulation (exit 0 expected);
#   8. the 4th system of that workflow: equimo's DINOv3 (equimo 2.x in the equimo venv, CPython
#      3.13) converted from the same checkpoint by equimo's converter, recorded and imported in
#      one step by `capture eqx --kind equimo` (the recorder embedded in the binary);
#      `dinodiff diff meta.st equimo.st`.
# Files go to $DINODIFF_WORK_DIR (default target/dinodiff-main). A second run reuses the
# checkpoint, the Equinox model, the ONNX file and the input (each is rebuilt only when what it is
# made from is newer) and re-runs the captures and the diff.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/target/release/dinodiff"
# The Python tools read the stage and variant vocabulary from this same binary (tools/vocabulary.py).
export DINODIFF_BIN="$bin"
work=${DINODIFF_WORK_DIR:-$repo/target/dinodiff-main}
python="${DINODIFF_VENV:?run through tools/dev main}/bin/python"
equimo_python="${DINODIFF_EQUIMO_VENV:?run through tools/dev main}/bin/python"
mkdir -p "$work"
cd "$work"
started=$(date +%s.%N)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# stale OUT IN...: OUT is missing or older than one of its sources (tools included).
stale() {
    local out=$1
    shift
    [[ ! -f $out ]] && return 0
    local src
    for src in "$@"; do [[ $src -nt $out ]] && return 0; done
    return 1
}
tools="$repo/tools"

step "1. a random-weight DINOv3 ViT-S/16 checkpoint in Meta's format (seed 0)"
stale vits16-seed0.pth "$tools/make_meta_checkpoint.py" &&
    "$python" "$tools/make_meta_checkpoint.py" --variant vits16 --seed 0 -o vits16-seed0.pth
ls -l vits16-seed0.pth

step "2. mapped onto the Equinox DINOv3 (jax2onnx's example model)"
stale vits16.eqx vits16-seed0.pth "$tools/meta_to_eqx.py" "$tools/eqx_model.py" &&
    "$python" "$tools/meta_to_eqx.py" --weights vits16-seed0.pth --img-size 224 -o vits16.eqx
ls -l vits16.eqx

step "3. exported to ONNX with jax2onnx"
stale vits16.onnx vits16.eqx "$tools/export_onnx.py" &&
    "$python" "$tools/export_onnx.py" --model vits16.eqx -o vits16.onnx
ls -l vits16.onnx

photo=$("$python" -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")')
step "4. the input, from $photo"
stale input.st "$bin" && "$bin" prep --image "$photo" --transform meta -o input.st

step "5a. dinodiff capture meta (libtorch, native)"
"$bin" capture meta --weights vits16-seed0.pth --input input.st -o meta.st --threads 2

step "5b. dinodiff capture eqx --model (the embedded recorder: JAX, eager, with the venv's Python)"
"$bin" capture eqx --model vits16.eqx --input input.st -o eqx.st --python "$python"

step "5c. dinodiff capture onnx (ONNX Runtime, every value inside the local functions)"
"$bin" capture onnx --model vits16.onnx --input input.st -o onnx.st --threads 2

step "5d. equimo (Python 3.13): dinodiff capture eqx --kind equimo (equimo's converter, eager JAX)"
"$bin" capture eqx --kind equimo --checkpoint vits16-seed0.pth --variant vits16 \
    --input input.st -o equimo.st --python "$equimo_python"

step "6. independent check of the Meta side: timm's DINOv3 port (tools/timm_capture.py)"
"$python" "$tools/timm_capture.py" --weights vits16-seed0.pth --input input.st -o timm.st
"$bin" diff meta.st timm.st | tail -2

step "6b. the ONNX headline against a default onnxruntime session (tools/check_deployed_headline.py)"
"$python" "$tools/check_deployed_headline.py" --model vits16.onnx --input input.st \
    --reference meta.st --dump onnx.st

step "7. dinodiff diff meta.st eqx.st onnx.st"
set +e
"$bin" diff meta.st eqx.st onnx.st
status=$?
step "8. the 4th system: dinodiff diff meta.st equimo.st (Meta ⇔ equimo)"
"$bin" diff meta.st equimo.st | sed -n -e '1,/^└/p' -e '/^head:/p' -e '/^verdict:/p'
equimo_status=${PIPESTATUS[0]}
set -e
echo
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "exit code $status (0 = all three agree within tolerance), Meta ⇔ equimo $equimo_status" \
    "(0 = within tolerance); main job ${elapsed} s"
[[ $status -eq 0 && $equimo_status -eq 0 ]]
