#!/usr/bin/env bash
# Issue 16 item 2: the fidelity options of lcs train-labelset, one at a time against the shipped recipe, on the
# avatars bundle's `faces` set; each mapper scored by actor samples (lcs eval) and actor edits (lcs eval-edits).
# STEPS actor steps per mapper (default 600: the shipped mapper has 3000; this compares recipes at equal cost),
# SEEDS (default "0"), RUNS (default runs/ablation), RECIPES (default all, e.g. "shipped projection": run those only,
# so two chains can share the work); python -m bench.ablation writes the table (docs/NAME.md, default ablation_avatars). Needs the bundle's latent table
# (lcs encode --bundle service/bundles/avatars; it is not shipped).
set -euo pipefail
R=${RUNS:-runs/ablation}
S=${STEPS:-600}
T=${THREADS:-1}
B=service/bundles/avatars
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }
recipe() {
  local name=$1 seed=$2
  shift 2
  case " ${RECIPES:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  local d=$R/$name-s$seed
  step lcs train-labelset --bundle $B --label-set faces --steps "$S" --diag-every 200 --threads "$T" --seed "$seed" \
    --out "$d" "$@"
  step lcs eval --bundle $B --sampler actor --label-set faces --artifact "$d" --n 1000 --n-spec3 200 --n-single 100 \
    --boots 10 --out "$d"
  step lcs eval-edits --bundle $B --label-set faces --mode actor --artifact "$d" --n 500 --out "$d"
}
[ -f $B/latents.json ] || step lcs encode --bundle $B
for seed in ${SEEDS:-0}; do
  recipe shipped "$seed"
  recipe real-actor-fakes "$seed" --real-actor-fakes 0.5
  recipe hard-negatives "$seed" --hard-negatives 0.5
  recipe projection "$seed" --critic projection
  recipe actor-attr "$seed" --actor-attr-weight 1
  recipe lambda-edit-0.01 "$seed" --lambda-dist-edit 0.01
  recipe ema "$seed" --actor-ema 0.99
  # combinations on the shipped faces recipe (the actor's attribute term)
  recipe actor-attr+fakes "$seed" --actor-attr-weight 1 --real-actor-fakes 0.5
  recipe actor-attr+hardneg "$seed" --actor-attr-weight 1 --hard-negatives 0.5
  recipe actor-attr+fakes+hardneg "$seed" --actor-attr-weight 1 --real-actor-fakes 0.5 --hard-negatives 0.5
done
step python -m bench.ablation --runs "$R" --out docs --name "${NAME:-ablation_avatars}"
