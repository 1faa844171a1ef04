#!/usr/bin/env bash
# The main job (README, first command), run by `tools/dev main` after set-up.
#
# Today: the core of dinodiff end to end on real files. It prepares the model input from the
# photo that matplotlib ships (grace_hopper.jpg), writes a pair of synthetic DINOv3 ViT-S/16-shaped
# dumps (every canonical stage; B = A + 1e-6 noise, with a drift planted at blocks.5.ls2) and
# diffs them. The Meta / Equinox / ONNX captures replace the synthetic pair as they land
# (issues 3-5). Files go to $DINODIFF_WORK_DIR (default target/dinodiff-main); a second run
# reuses them.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/target/release/dinodiff"
work=${DINODIFF_WORK_DIR:-$repo/target/dinodiff-main}
python="${DINODIFF_VENV:?run through tools/dev main}/bin/python"
mkdir -p "$work"
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

photo=$("$python" -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")')
step "prepare the input from $photo"
[[ -f input.st ]] || "$bin" prep --image "$photo" --transform meta -o input.st
"$bin" inspect input.st

step "synthetic ViT-S/16 dumps (every canonical stage, real shapes)"
[[ -f a.st ]] || "$bin" synth --variant vits16 --seed 1 --input input.st -o a.st
[[ -f b.st ]] || "$bin" synth --variant vits16 --seed 1 --input input.st --noise 1e-6 --drift blocks.5.ls2=1e-3 -o b.st

step "dinodiff diff a.st b.st"
set +e
"$bin" diff a.st b.st
status=$?
set -e
echo
echo "exit code $status (0 = within tolerance, 1 = over tolerance: the planted drift at blocks.5.ls2)"
[[ $status -eq 1 ]]
