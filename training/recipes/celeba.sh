#!/usr/bin/env bash
# Your CelebA download to a served bundle in one command (issue 28):
#   training/recipes/celeba.sh CELEBA_DIR [OUT]        then: lcs serve --bundle OUT
# CELEBA_DIR holds img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt as distributed
# (training/data/celeba.py reads them; 64x64 from the 128 centre crop). OUT (default runs/celeba/bundle) gets the VAE
# (fp16) and judge as `lcs pack` ships them, the latent table, and two label sets: `realism` and `attributes` (all 40).
# Checkpoints, logs and grids stay in WORK (default OUT-train). Settings follow the avatars recipes (foundation.sh,
# default_bundle.sh: it says why for each label-set flag); every job runs on DEVICE (auto) with THREADS (0: PyTorch's
# default). The extra flags in VAE_ARGS, JUDGE_ARGS, LABELSET_ARGS come last and win (toy sizes:
# tests/test_recipes.py); DATA_ARGS adds the loader's KEY=VALUE parameters (crop, size).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,3p "$0" >&2; exit 2; }
ROOT=$1
OUT=${2:-runs/celeba/bundle}
WORK=${WORK:-${OUT%/}-train}
DEV=(--device "${DEVICE:-auto}")
T=(--threads "${THREADS:-0}")
DATA=(--dataset celeba --data-arg "root=$ROOT")
for a in ${DATA_ARGS:-}; do DATA+=(--data-arg "$a"); done
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }

step lcs train-vae "${DATA[@]}" --out "$WORK" "${DEV[@]}" "${T[@]}" ${VAE_ARGS:-}
step lcs train-judge "${DATA[@]}" --out "$WORK" "${DEV[@]}" "${T[@]}" ${JUDGE_ARGS:-}
# pack first: it recomputes the decoder fingerprint over the fp16 weights, and the latent table and label sets are
# bound to the decoder that ships
step lcs pack --src "$WORK" --out "$OUT"
step lcs encode --bundle "$OUT" "${DEV[@]}"
# λ_dist 0 for realism and --actor-attr-weight 1 for the attributes: the avatars bundle's measured choices
step lcs train-labelset --bundle "$OUT" --label-set realism --steps 3000 --lambda-dist 0 --diag-every 250 "${T[@]}" \
  ${LABELSET_ARGS:-}
step lcs train-labelset --bundle "$OUT" --label-set attributes --steps 3000 --actor-attr-weight 1 --diag-every 250 \
  "${T[@]}" ${LABELSET_ARGS:-}
echo "serve it: lcs serve --bundle $OUT    (then GET /sample?attrs=smiling,young)"
