#!/usr/bin/env bash
# Issue 15 without a GPU: the one lever the CPU showed moving the attributes the shipped decoder loses is more
# training (docs/backbones_avatars_cpu.md: +1,299 steps took Blond_Hair 0.01 -> 0.52, Smiling 0.00 -> 0.11).
# This continues the shipped avatars VAE for MINUTES on one thread, builds a candidate bundle beside the shipped one
# (the new VAE, the shipped judge, a re-encoded latent table, realism + faces retrained; FACES_ARGS adds the fidelity
# recipe's options), evaluates it as default_bundle.sh does and compares backbones. Nothing under service/ changes:
# shipping is copying $R/bundles/avatars over service/bundles/avatars once its numbers are read.
set -euo pipefail
R=${RUNS:-runs/backbone-long}
M=${MINUTES:-70}
B=service/bundles/avatars
C=$R/bundles/avatars
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }

step lcs train-vae --dataset avatars --data-arg n=32000 --out $R/vae --init $B --lr 3e-4 --lr-schedule cosine \
  --epochs 1000 --max-minutes "$M" --threads 1 --grid-every 1000 --ckpt-every 500
step lcs pack --src $R/vae --out $R/packed --stem vae
OMP_NUM_THREADS=1 step python -m bench.backbones --candidate shipped=$B --candidate "continued-${M}min=$R/packed" --judge $B \
  --n-prior 2000 --out $R --name backbones_long
mkdir -p $C
cp $R/packed/vae.safetensors $R/packed/vae.json $B/judge.safetensors $B/judge.json $C/
step lcs encode --bundle $C
# realism and faces train side by side, one thread each
lcs train-labelset --bundle $C --label-set realism --steps 3000 --diag-every 250 --threads 1 > $R/realism.log 2>&1 &
step lcs train-labelset --bundle $C --label-set faces --steps 3000 --diag-every 250 --threads 1 ${FACES_ARGS:-}
wait
EVALS=$R/card BUNDLES=$R/bundles PART=avatars-eval THREADS=1 bash training/recipes/default_bundle.sh
