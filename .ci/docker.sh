#!/usr/bin/env bash
# Docker check (issue 5): build the CPU image, run it until healthy, sample a PNG; then two compose replicas on
# one registry volume: register on replica 1, sample from replica 2. Everything started here is removed at exit,
# pass or fail: containers, the compose network and volume, the podman API process, docker/lcs.env.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=../shared/tools/container-engine.sh
TOKEN=ci-$(date +%s)-$RANDOM
SOCK=/run/podman/podman.sock
export DEBIAN_FRONTEND=noninteractive

cleanup() {
  set +e
  podman rm -f -v lcs-ci-single >/dev/null 2>&1
  if [ -S "$SOCK" ]; then DOCKER_HOST=unix://$SOCK docker-compose -p lcsci -f docker/compose.yaml down -v >/dev/null 2>&1; fi
  rm -f docker/lcs.env
  if [ -n "${SOCKET_PID:-}" ]; then kill "$SOCKET_PID" >/dev/null 2>&1; rm -f "$SOCK"; fi
}
trap cleanup EXIT

# Podman here has no systemd to run HEALTHCHECK on a timer, so run the image's own check until it passes:
# `podman healthcheck run` executes exactly the command the Dockerfile (or compose) declares.
wait_healthy() {  # CONTAINER SECONDS
  local t0; t0=$(date +%s)
  until podman healthcheck run "$1" >/dev/null 2>&1; do
    [ $(( $(date +%s) - t0 )) -lt "$2" ] || { echo "$1 not healthy after $2 s"; podman logs --tail 30 "$1"; return 1; }
    sleep 1
  done
}
wait_ready() {  # URL SECONDS
  for _ in $(seq 1 "$2"); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 1; done
  echo "not ready: $1"; return 1
}

echo "== podman + stand-in base"
bash "$ENGINE" prepare
need() {  # COMMAND PACKAGE: install the Debian package when the command is missing (refreshing the lists if needed)
  command -v "$1" >/dev/null && return 0
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}
need curl curl
need docker-compose docker-compose

echo "== build CPU image (local torch wheel: TORCH_INDEX_URL empty)"
t0=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI format has no field for it)
podman build --pull=never --format docker --build-arg TORCH_INDEX_URL= -f docker/Dockerfile -t lcs:cpu . >/dev/null
echo "built in $(( $(date +%s) - t0 )) s; size $(podman image inspect lcs:cpu --format '{{.Size}}') bytes"

echo "== single container"
t0=$(date +%s)
podman run -d --name lcs-ci-single -p 127.0.0.1:8010:8000 -e LCS_ADMIN_TOKEN="$TOKEN" lcs:cpu >/dev/null
wait_healthy lcs-ci-single 120
echo "healthy in $(( $(date +%s) - t0 )) s"
wait_ready http://127.0.0.1:8010 120
echo "ready in $(( $(date +%s) - t0 )) s; uid $(podman exec lcs-ci-single id -u)"
[ "$(podman exec lcs-ci-single id -u)" != 0 ] || { echo "container runs as root"; exit 1; }
curl -sf -o /tmp/lcs-ci.png "http://127.0.0.1:8010/sample?attrs=smiling,eyeglasses&seed=1"
python3 -c "from PIL import Image; im = Image.open('/tmp/lcs-ci.png'); assert im.format == 'PNG' and im.size == (64, 64), im.size; print('PNG', im.size)"
podman rm -f -v lcs-ci-single >/dev/null

echo "== compose: two replicas, one registry"
if [ ! -S "$SOCK" ]; then
  mkdir -p "$(dirname "$SOCK")"   # container-engine.sh socket assumes the directory exists; on a fresh machine it does not
  SOCKET_PID=$(bash "$ENGINE" socket | sed -n 's/^container-engine: podman API pid \([0-9]*\)$/\1/p')
fi
export DOCKER_HOST=unix://$SOCK
printf 'LCS_ADMIN_TOKEN=%s\n' "$TOKEN" > docker/lcs.env
t0=$(date +%s)
docker-compose -p lcsci -f docker/compose.yaml up -d --no-build
wait_healthy lcsci_lcs-1_1 120
wait_healthy lcsci_lcs-2_1 120
wait_ready http://127.0.0.1:8001 120
wait_ready http://127.0.0.1:8002 120
echo "both replicas healthy and ready in $(( $(date +%s) - t0 )) s"
curl -sf -H "Authorization: Bearer $TOKEN" -X PUT \
  -F manifest=@service/bundles/avatars/labelsets/faces/mapper.json \
  -F weights=@service/bundles/avatars/labelsets/faces/mapper.safetensors \
  http://127.0.0.1:8001/labelsets/faces-ci >/dev/null
t0=$(date +%s%N)
until curl -sf -o /tmp/lcs-ci-2.png "http://127.0.0.1:8002/sample?labelset=faces-ci&attrs=smiling"; do
  [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 10 ] || { echo "replica 2 never served faces-ci"; exit 1; }
  sleep 0.1
done
echo "replica 2 served the label set registered on replica 1 after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
python3 -c "from PIL import Image; assert Image.open('/tmp/lcs-ci-2.png').format == 'PNG'"
echo "docker check passed"
