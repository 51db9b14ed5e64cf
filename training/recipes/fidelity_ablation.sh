#!/usr/bin/env bash
# Issues 16 item 2 and 27 item 4: the fidelity options of lcs train-labelset, one at a time against the shipped
# recipe, on DATASET's attribute set (avatars: faces, the default; fashion-mnist: category); each mapper scored by actor
# samples (lcs eval) and actor edits (lcs eval-edits).
# STEPS actor steps per mapper (default 600: the shipped mappers have 3000 (faces) and 600 (category); this compares
# recipes at equal cost; the `steps-x2.5` recipe trains 2.5 times as long), SEEDS (default "0"), RUNS (default
# runs/ablation), RECIPES (default all, e.g. "shipped projection": run those only, so two chains can share the work);
# python -m bench.ablation writes the table (docs/NAME.md, default ablation_DATASET). Needs the bundle's latent table
# (lcs encode; it is not shipped: encoded here when missing).
set -euo pipefail
D=${DATASET:-avatars}
R=${RUNS:-runs/ablation}
S=${STEPS:-600}
T=${THREADS:-1}
B=service/bundles/$D
case $D in
  avatars) LS=faces BASE=() ;;
  # λ_dist 0: the shipped category set's (training/recipes/default_bundle.sh says why)
  fashion-mnist) LS=category BASE=(--lambda-dist 0) ;;
  *) echo "DATASET is avatars or fashion-mnist, not $D" >&2; exit 2 ;;
esac
step() { echo "== $*"; local t=$SECONDS; "$@"; echo "   wall $((SECONDS - t)) s"; }
recipe() {
  local name=$1 seed=$2 steps=$S
  shift 2
  case " ${RECIPES:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  [ "$name" != steps-x2.5 ] || steps=$((S * 5 / 2))
  local d=$R/$name-s$seed
  [ -f "$d/mapper.safetensors" ] || step lcs train-labelset --bundle $B --label-set $LS --steps "$steps" \
    --diag-every 200 --threads "$T" --seed "$seed" --out "$d" "${BASE[@]}" "$@"
  compgen -G "$d/eval-actor-*.json" >/dev/null || step lcs eval --bundle $B --sampler actor --label-set $LS \
    --artifact "$d" --n 1000 --n-spec3 200 --n-single 100 --boots 10 --out "$d"
  compgen -G "$d/edits-actor-*.json" >/dev/null || step lcs eval-edits --bundle $B --label-set $LS --mode actor \
    --artifact "$d" --n 500 --out "$d"
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
  recipe steps-x2.5 "$seed"
  # combinations on the actor's attribute term (the shipped faces recipe's)
  recipe actor-attr+fakes "$seed" --actor-attr-weight 1 --real-actor-fakes 0.5
  recipe actor-attr+hardneg "$seed" --actor-attr-weight 1 --hard-negatives 0.5
  recipe actor-attr+fakes+hardneg "$seed" --actor-attr-weight 1 --real-actor-fakes 0.5 --hard-negatives 0.5
done
step python -m bench.ablation --runs "$R" --out docs --name "${NAME:-ablation_$D}"
