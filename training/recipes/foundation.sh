#!/usr/bin/env bash
# The real runs behind the foundation numbers (issue 2): VAEs at σx = 0.1 and 1 on both
# datasets, latent tables, and a judge per dataset. RUNS=dir (default runs/) holds the outputs.
# On a 2-core CPU the avatars VAEs take ~50 min each; on a GPU add --device cuda (same code).
set -euo pipefail
RUNS=${RUNS:-runs}
T=${THREADS:-1}
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }

if [ "${PART:-all}" = all ] || [ "${PART}" = avatars-vae ]; then
  step lcs train-vae --dataset avatars --data-arg n=32000 --out "$RUNS/avatars-sx0.1" --sigma-x 0.1 --epochs 10 --threads "$T"
  # The σx = 1 comparison VAE got 3 epochs: the 2-core session could not fit a second 10-epoch run.
  step lcs train-vae --dataset avatars --data-arg n=32000 --out "$RUNS/avatars-sx1.0" --sigma-x 1.0 --epochs 3 --threads "$T"
fi
if [ "${PART:-all}" = all ] || [ "${PART}" = fashion ]; then
  for s in 0.1 1.0; do
    step lcs train-vae --dataset fashion-mnist --out "$RUNS/fashion-sx$s" --sigma-x $s --latent-dim 32 --epochs 8 --batch-size 128 --threads "$T"
  done
  step lcs train-judge --dataset fashion-mnist --out "$RUNS/fashion-sx0.1" --epochs 3 --threads "$T"
  step lcs encode --bundle "$RUNS/fashion-sx0.1"
fi
if [ "${PART:-all}" = all ] || [ "${PART}" = avatars-judge ]; then
  step lcs train-judge --dataset avatars --data-arg n=32000 --out "$RUNS/avatars-sx0.1" --epochs 4 --threads "$T"
  step lcs encode --bundle "$RUNS/avatars-sx0.1"
fi
if [ "${PART:-all}" = all ] || [ "${PART}" = eval ]; then
  step lcs eval --bundle "$RUNS/avatars-sx0.1" --sampler prior --label-set faces --compare-vae "$RUNS/avatars-sx1.0"
  step lcs eval --bundle "$RUNS/fashion-sx0.1" --sampler prior --label-set category --compare-vae "$RUNS/fashion-sx1.0"
  step python -m bench.foundation --runs "$RUNS" --docs docs
fi
