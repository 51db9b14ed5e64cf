#!/usr/bin/env bash
# Issue 26 item 3: which lever moves what the decoder still loses (Smiling, Mustache, a beard, Blond_Hair), compared at
# equal cost: every candidate continues the committed resume point (training/resume/avatars-vae) for MINUTES of wall
# clock on every core, at the precision the CPU runs fastest (--precision auto), then bench.backbones reads them all
# with the shipped judge. Each run keeps its checkpoint in $R/NAME, so the winner is continued by
#   lcs train-vae ... --out $R/NAME --resume --max-minutes M   (then lcs pack --src $R/NAME --out training/resume/avatars-vae)
#   plain:   the stretch recipe (warm restart of the learning rate to 3e-4, cosine to 1e-5)
#   lr1e-3:  the same with a warm restart to 1e-3 (the schedule as the lever)
#   gan:     the VAE-GAN decoder (image discriminator: adversarial + feature matching on top of the σx = 0.1 likelihood)
#   grown:   a residual block after every stage of the encoder and the decoder, grown in place (zero-initialised, so it
#            starts as the same function: --grow)
set -euo pipefail
R=${RUNS:-runs/backbone-candidates}
M=${MINUTES:-18}
P=training/resume/avatars-vae
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }
vae() {
  step lcs train-vae --dataset avatars --data-arg n=32000 --init $P --resume --lr-schedule cosine --warmup-steps 200 \
    --epochs 1000 --max-minutes "$M" --grid-every 500 --ckpt-every 100 "$@"
}

vae --out $R/plain --lr 3e-4
vae --out $R/lr1e-3 --lr 1e-3
# adv 500 / fm 1000: the weights issue 15's lever runs measured (~6% and ~30% of the likelihood's gradient on the image)
vae --out $R/gan --lr 3e-4 --adv-weight 500 --fm-weight 1000
vae --out $R/grown --lr 3e-4 --res-blocks 1 --grow
step python -m bench.backbones --candidate resume-point=$P --candidate plain=$R/plain --candidate lr1e-3=$R/lr1e-3 \
  --candidate gan=$R/gan --candidate grown=$R/grown --judge service/bundles/avatars --n-prior 2000 \
  --out $R --name backbones_candidates
