#!/usr/bin/env bash
# Issue 26: the avatars VAE trained on in stretches that each fit one session (and survive being stopped).
# A stretch continues the committed resume point (training/resume/avatars-vae: the last stretch's fp16 weights;
# the shipped VAE the first time) for MINUTES of wall clock on every core, at the precision the CPU runs fastest
# (--precision auto: bf16 where it has bf16 units, else fp32), packs the result back over the resume point (7.8 MB
# per stretch in the repository: the fp16 VAE; the 47 MB fp32 checkpoint with Adam's moments stays in $R), and
# measures reconstruction recall per attribute against the shipped VAE with the shipped judge.
# Stopped midway (SIGTERM, a lost machine)? Run it again with the same RUNS: --resume continues from $R's checkpoint.
# THREADS=1 leaves a core to other work: on an AVX2-only CPU one thread ran 1.2-2.1 s/step, two barely faster.
# Shipping a stretch (retraining the label sets on it) is training/recipes/default_bundle.sh on a bundle holding it.
set -euo pipefail
R=${RUNS:-runs/backbone-stretch}
M=${MINUTES:-90}
P=training/resume/avatars-vae
B=service/bundles/avatars
FROM=$P
[ -f $P/vae.safetensors ] || FROM=$B
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }

# lr 1e-3 (LR=...): at equal cost the warm restart at 1e-3 was the one lever that moved Smiling
# (docs/backbones_candidates.md), and stretches 4-6 continued it (stretch 5 is the shipped VAE); 1-3 ran at 3e-4.
# a warm-up from the stretch's first step: Adam's moments start afresh from packed weights (without one, MSE rose
# 0.0027 -> 0.0035 first), and a stretch resumed from $R's finished checkpoint re-plans its schedule
step lcs train-vae --dataset avatars --data-arg n=32000 --out $R/vae --init $FROM --resume \
  --lr "${LR:-1e-3}" --lr-schedule cosine --warmup-steps 200 --epochs 1000 --max-minutes "$M" --grid-every 500 --ckpt-every 100 ${THREADS:+--threads "$THREADS"}
step lcs pack --src $R/vae --out $P --stem vae
cp $R/vae/train_log.jsonl $P/train_log.jsonl
step python -m bench.backbones --candidate shipped=$B --candidate stretch=$P --judge $B --n-prior 2000 \
  --out $R --name backbones_stretch
