#!/usr/bin/env bash
# Issue 15: the avatars backbone trained where it can be, a GPU machine lent through the device tool, in one call.
# The train-vae line is the same command on CPU (--device cpu); there it takes days, which is why this exists.
# Prepare here, once per session (the device has no network; python_avatars and resvg_py travel as wheels):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl python_avatars==1.4.1 resvg_py==0.5.0
# Then one device call (timeout 540 s: MINUTES of training + rendering + the bench leave room for one rerun):
#   run(carry=[".whl"], timeout_s=540, command="python3 -m pip install -q --no-index --no-deps --target /tmp/site
#       .whl/*.whl && PYTHONPATH=/tmp/site:. MINUTES=6 bash training/recipes/backbone_gpu.sh")
# What comes back in $OUT (at most 8 files of 16 MiB): the fp16 VAE and its manifest, its training log, the last
# reconstruction grid and the candidates' table (bench.backbones) against the shipped VAE, read by the shipped judge.
# Here, afterwards: copy vae.* into service/bundles/avatars, then PART=avatars-train, avatars-eval and fidelity of
# training/recipes/default_bundle.sh, and python -m bench.backbones for docs/.
# Sizes: latent 256 with a residual block per stage (CPU evidence: docs/backbones_avatars_cpu.md); 14.9 MB at fp16,
# inside issue 15's 40 MB for all tracked weights. VAE-GAN: add ADV/FM (e.g. ADV=500 FM=1000).
set -euo pipefail
O=${OUT:-runs/gpu}
M=${MINUTES:-6}
W=runs/gpu-work
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m cli train-vae --dataset avatars --data-arg n=32000 --out $W/vae --latent-dim "${LATENT:-256}" \
  --res-blocks "${RES:-1}" --width "${WIDTH:-32}" --lr 1e-3 --lr-schedule cosine --epochs 100000 \
  --batch-size "${BATCH:-128}" --max-minutes "$M" --adv-weight "${ADV:-0}" --fm-weight "${FM:-0}" \
  --device "${DEVICE:-cuda}" --grid-every 5000 --ckpt-every 5000
python3 -m cli pack --src $W/vae --out $W/packed --stem vae
python3 -m bench.backbones --candidate shipped=service/bundles/avatars --candidate gpu=$W/packed \
  --judge service/bundles/avatars --n-prior "${NPRIOR:-5000}" --out $W --name backbones_avatars_gpu --device "${DEVICE:-cuda}"
mkdir -p "$O"
cp $W/packed/vae.safetensors $W/packed/vae.json $W/vae/train_log.jsonl $W/backbones_avatars_gpu.* "$O"/
cp "$(ls $W/vae/grids/recon_*.png | tail -1)" "$O"/recon_last.png
ls -la "$O"
