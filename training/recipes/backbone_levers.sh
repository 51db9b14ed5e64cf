#!/usr/bin/env bash
# Issue 15, item 4: what the CPU can settle before a GPU trains the backbone: which levers move the attributes the
# shipped decoder loses (Smiling, Blond_Hair, Mustache), in runs of equal wall-clock cost (train-vae --max-minutes).
#   from scratch:  the shipped sizes | latent 256 + a residual block per stage | the shipped sizes on the "face" crop
#   fine-tuned from the shipped VAE (4,000 steps in):  plain ELBO | VAE-GAN (image discriminator, Larsen et al.)
# The face crop is read by its own judge (same recipe as the shipped one). bench.backbones writes the table.
# MINUTES per candidate (default 16) on THREADS threads (default 1: the other core stays free).
set -euo pipefail
R=${RUNS:-runs/levers}
M=${MINUTES:-16}
T=${THREADS:-1}
B=service/bundles/avatars
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }
vae() { step lcs train-vae --dataset avatars --data-arg n=32000 --max-minutes "$M" --threads "$T" --grid-every 200 "$@"; }

vae --out $R/scratch-base
vae --out $R/scratch-l256-res1 --latent-dim 256 --res-blocks 1
vae --data-arg crop=face --out $R/scratch-face
vae --out $R/tune-plain --init $B --lr 3e-4 --lr-schedule cosine
# adv 500 / fm 1000: on the shipped VAE these terms' gradients on the image are ~6% and ~30% of the σ_x=0.1
# likelihood's once the discriminator has trained 60 steps (measured; they grow as it sharpens)
vae --out $R/tune-gan --init $B --lr 3e-4 --lr-schedule cosine --adv-weight 500 --fm-weight 1000
step lcs train-judge --dataset avatars --data-arg n=32000 --data-arg crop=face --out $R/judge-face --epochs 4 --threads "$T"
step python -m bench.backbones --candidate shipped=$B --candidate scratch-base=$R/scratch-base \
  --candidate scratch-l256-res1=$R/scratch-l256-res1 --candidate scratch-face=$R/scratch-face \
  --candidate tune-plain=$R/tune-plain --candidate tune-gan=$R/tune-gan \
  --judge $B --judge $R/judge-face --n-prior 2000 --out docs --name backbones_avatars_cpu
