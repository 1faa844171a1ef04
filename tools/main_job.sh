#!/usr/bin/env bash
# The main job (README, first command), run by `tools/dev main` after set-up.
#
# Today (the Meta side; the Equinox and ONNX captures and the three-way triangulation join with
# issues 4-5):
#   1. a deterministic random-weight DINOv3 ViT-S/16 checkpoint in Meta's exact format;
#   2. the model input, from the photo that matplotlib ships (grace_hopper.jpg), Meta's transform;
#   3. `dinodiff capture meta`: Meta's forward natively in libtorch, every canonical stage;
#   4. the independent reference: timm's DINOv3 port on the same checkpoint, hooked
#      (tools/timm_capture.py);
#   5. `dinodiff diff` of the two: expected exit 0, max|Δ| 0.
# Files go to $DINODIFF_WORK_DIR (default target/dinodiff-main); a second run reuses the
# checkpoint and the input and re-runs the captures (seconds).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/target/release/dinodiff"
work=${DINODIFF_WORK_DIR:-$repo/target/dinodiff-main}
python="${DINODIFF_VENV:?run through tools/dev main}/bin/python"
mkdir -p "$work"
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a random-weight DINOv3 ViT-S/16 checkpoint in Meta's format (seed 0)"
[[ -f vits16-seed0.pth ]] || "$python" "$repo/tools/make_meta_checkpoint.py" --variant vits16 --seed 0 -o vits16-seed0.pth
ls -l vits16-seed0.pth

photo=$("$python" -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")')
step "prepare the input from $photo"
[[ -f input.st ]] || "$bin" prep --image "$photo" --transform meta -o input.st

step "dinodiff capture meta (libtorch, native)"
"$bin" capture meta --weights vits16-seed0.pth --input input.st -o meta.st

step "reference: timm's DINOv3 port on the same checkpoint, forward hooks (tools/timm_capture.py)"
"$python" "$repo/tools/timm_capture.py" --weights vits16-seed0.pth --input input.st -o timm.st

step "dinodiff diff meta.st timm.st"
set +e
"$bin" diff meta.st timm.st
status=$?
set -e
echo
echo "exit code $status (0 = every stage within tolerance)"
[[ $status -eq 0 ]]
