#!/usr/bin/env bash
# Docker check (issue 5): build the CPU image, run it until healthy, sample a PNG; then two compose replicas on
# one registry volume: register on replica 1, sample from replica 2. Everything started here is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=../shared/tools/container-engine.sh
TOKEN=ci-$(date +%s)-$RANDOM
export DEBIAN_FRONTEND=noninteractive

cleanup() {
  set +e
  podman rm -f lcs-ci-single >/dev/null 2>&1
  if [ -n "${DOCKER_HOST:-}" ]; then docker-compose -p lcsci -f docker/compose.yaml down -v >/dev/null 2>&1; fi
  rm -f docker/lcs.env
  [ -n "${SOCKET_PID:-}" ] && kill "$SOCKET_PID" >/dev/null 2>&1
  pkill -f "podman system service" >/dev/null 2>&1
}
trap cleanup EXIT

wait_ready() {  # URL SECONDS
  for _ in $(seq 1 "$2"); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 1; done
  echo "not ready: $1"; return 1
}

echo "== podman + stand-in base"
bash "$ENGINE" prepare
command -v curl >/dev/null || apt-get install -y -qq --no-install-recommends curl >/dev/null

echo "== build CPU image (local torch wheel: TORCH_INDEX_URL empty)"
t0=$(date +%s)
podman build --pull=never --format docker --build-arg TORCH_INDEX_URL= -f docker/Dockerfile -t lcs:cpu . >/dev/null
echo "built in $(( $(date +%s) - t0 )) s; size $(podman image inspect lcs:cpu --format '{{.Size}}') bytes"

echo "== single container"
t0=$(date +%s)
podman run -d --name lcs-ci-single -p 127.0.0.1:8010:8000 -e LCS_ADMIN_TOKEN="$TOKEN" lcs:cpu >/dev/null
wait_ready http://127.0.0.1:8010 120
echo "ready in $(( $(date +%s) - t0 )) s; user $(podman exec lcs-ci-single id -u)"
[ "$(podman exec lcs-ci-single id -u)" != 0 ]
curl -sf -o /tmp/lcs-ci.png "http://127.0.0.1:8010/sample?attrs=smiling,eyeglasses&seed=1"
python3 -c "from PIL import Image; im = Image.open('/tmp/lcs-ci.png'); assert im.format == 'PNG' and im.size == (64, 64), im.size"
podman rm -f lcs-ci-single >/dev/null

echo "== compose: two replicas, one registry"
command -v docker-compose >/dev/null || apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
bash "$ENGINE" socket
export DOCKER_HOST=unix:///run/podman/podman.sock
printf 'LCS_ADMIN_TOKEN=%s\n' "$TOKEN" > docker/lcs.env
docker-compose -p lcsci -f docker/compose.yaml up -d
wait_ready http://127.0.0.1:8001 120
wait_ready http://127.0.0.1:8002 120
curl -sf -H "Authorization: Bearer $TOKEN" -X PUT \
  -F manifest=@service/bundles/avatars/labelsets/faces/mapper.json \
  -F weights=@service/bundles/avatars/labelsets/faces/mapper.safetensors \
  http://127.0.0.1:8001/labelsets/faces-ci >/dev/null
t0=$(date +%s)
until curl -sf -o /dev/null "http://127.0.0.1:8002/sample?labelset=faces-ci&attrs=smiling"; do
  [ $(( $(date +%s) - t0 )) -lt 10 ] || { echo "replica 2 never served faces-ci"; exit 1; }
  sleep 0.2
done
echo "replica 2 served the label set registered on replica 1 after $(( $(date +%s) - t0 )) s"
echo "docker check passed"
