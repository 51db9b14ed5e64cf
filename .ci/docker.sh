#!/usr/bin/env bash
# Docker check (issue 5): build the CPU image, run it until healthy, sample a PNG; then two compose replicas on
# one registry volume: register on replica 1, sample from replica 2; then compose's `cluster` profile: three replicas
# on an S3 registry (SeaweedFS) with Redis change notices: register on lcs-a, time lcs-b and lcs-c until they serve
# it, replace it from lcs-c, time lcs-a and lcs-b. Everything started here is removed at exit, pass or fail:
# containers, the compose networks and volumes, the podman API process, docker/lcs.env, the temporary manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=../shared/tools/container-engine.sh
TOKEN=ci-$(date +%s)-$RANDOM
S3_SECRET=ci-$(date +%s)-$RANDOM$RANDOM
SOCK=/run/podman/podman.sock
export DEBIAN_FRONTEND=noninteractive

cleanup() {
  set +e
  podman rm -f -v lcs-ci-single >/dev/null 2>&1
  # --profile cluster: down then also covers the cluster's services; --timeout 5: the data goes anyway
  if [ -S "$SOCK" ]; then
    DOCKER_HOST=unix://$SOCK docker-compose -p lcsci -f docker/compose.yaml --profile cluster down -v --timeout 5 >/dev/null 2>&1
  fi
  rm -f docker/lcs.env
  if [ -n "${TMPD:-}" ]; then rm -rf "$TMPD"; fi
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
wait_ready() {  # URL SECONDS [CONTAINER: its log's tail when not ready]
  for _ in $(seq 1 "$2"); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 1; done
  echo "not ready: $1 $(curl -s "$1/readyz")"
  if [ -n "${3:-}" ]; then podman logs --tail 30 "$3"; fi
  return 1
}
put_labelset() {  # URL NAME MANIFEST: register a version of the shipped faces weights; prints the version id
  local out code
  out=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $TOKEN" -X PUT -F manifest=@"$3" \
    -F weights=@service/bundles/avatars/labelsets/faces/mapper.safetensors "$1/labelsets/$2")
  code=${out##*$'\n'}
  # a refusal says what it was (stderr: stdout is the version id)
  [ "$code" = 201 ] || { echo "PUT $1/labelsets/$2 answered $code: ${out%$'\n'*}" >&2; return 1; }
  printf '%s' "${out%$'\n'*}" | python3 -c "import json, sys; print(json.load(sys.stdin)['version'])"
}
wait_version() {  # VERSION T0_NS NAME=URL...: ms from T0 until each replica's /labelsets serves VERSION; fail after 10 s
  local v=$1 t0=$2 r p rc=0 pids=(); shift 2
  for r in "$@"; do  # one poller per replica, side by side: no replica's time includes another's polls
    (
      until curl -sf "${r#*=}/labelsets" | grep -q "\"version\":\"$v\""; do
        [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 10 ] || { echo "${r%%=*} never served $v within 10 s"; exit 1; }
        sleep 0.02
      done
      echo "${r%%=*} serves $v $(( ($(date +%s%N) - t0) / 1000000 )) ms after the PUT was sent"
    ) &
    pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
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
n=$(podman ps -q --filter label=com.docker.compose.project=lcsci | wc -l)
[ "$n" = 2 ] || { echo "plain up started $n containers, not the two replicas (profile cluster leaked?)"; exit 1; }
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
docker-compose -p lcsci -f docker/compose.yaml down -v >/dev/null 2>&1   # free the CPUs for the cluster

echo "== compose profile cluster: three replicas, registry in S3 (SeaweedFS), change notices over Redis"
# No registry to pull from: build stand-ins under exactly the image names compose.yaml pins (docker.io/... is what
# the short names mean), so `up --no-build` finds them locally. On a machine that can pull, the official ones run.
SEAWEEDFS_IMAGE=$(sed -n 's/^ *image: *\(chrislusf\/seaweedfs:[^ ]*\).*/\1/p' docker/compose.yaml)
REDIS_IMAGE=$(sed -n 's/^ *image: *\(redis:[^ ]*\).*/\1/p' docker/compose.yaml)
t0=$(date +%s)
podman build --pull=never -f docker/ci/Dockerfile.seaweedfs -t "docker.io/$SEAWEEDFS_IMAGE" docker/ci >/dev/null
podman build --pull=never -f docker/ci/Dockerfile.redis -t "docker.io/library/$REDIS_IMAGE" docker/ci >/dev/null
echo "stand-ins for $SEAWEEDFS_IMAGE and $REDIS_IMAGE built in $(( $(date +%s) - t0 )) s"
printf 'LCS_ADMIN_TOKEN=%s\nAWS_ACCESS_KEY_ID=lcsci\nAWS_SECRET_ACCESS_KEY=%s\nAWS_DEFAULT_REGION=us-east-1\n' \
  "$TOKEN" "$S3_SECRET" > docker/lcs.env
t0=$(date +%s)
docker-compose -p lcsci -f docker/compose.yaml --profile cluster up -d --no-build s3 redis lcs-a lcs-b lcs-c
wait_ready http://127.0.0.1:8101 180 lcsci_lcs-a_1
wait_ready http://127.0.0.1:8102 180 lcsci_lcs-b_1
wait_ready http://127.0.0.1:8103 180 lcsci_lcs-c_1
echo "three replicas ready in $(( $(date +%s) - t0 )) s"
# each replica subscribes to its registry's notice channel: the Redis path is wired, not only the polling fallback
for _ in $(seq 1 20); do
  subs=$(podman exec lcsci_redis_1 sh -c 'redis-cli PUBSUB NUMSUB $(redis-cli PUBSUB CHANNELS)' | paste -sd' ')
  case " $subs " in *" 3 "*) break ;; esac
  sleep 0.5
done
echo "redis channel and subscribers: $subs"
case " $subs " in *" 3 "*) ;; *) echo "the three replicas do not all listen for change notices"; exit 1 ;; esac
A=lcs-a=http://127.0.0.1:8101 B=lcs-b=http://127.0.0.1:8102 C=lcs-c=http://127.0.0.1:8103
t0=$(date +%s%N)
v1=$(put_labelset "${A#*=}" faces-ci service/bundles/avatars/labelsets/faces/mapper.json)
echo "registered faces-ci $v1 on lcs-a: the PUT answered after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
wait_version "$v1" "$t0" "$A" "$B" "$C"
for r in "$B" "$C"; do  # a refusal says what it was, and the replica's log says why
  code=$(curl -s -o /tmp/lcs-ci-cluster.png -w '%{http_code}' "${r#*=}/sample?labelset=faces-ci&attrs=smiling")
  if [ "$code" != 200 ]; then
    echo "${r%%=*} answered $code: $(head -c 600 /tmp/lcs-ci-cluster.png)"
    podman logs --tail 40 "lcsci_${r%%=*}_1"
    exit 1
  fi
  python3 -c "from PIL import Image; assert Image.open('/tmp/lcs-ci-cluster.png').format == 'PNG'"
done
# a replacement is another version: the same weights under another manifest name (versions are content hashes)
TMPD=$(mktemp -d)
python3 -c "import json, sys; m = json.load(open(sys.argv[1])); m['name'] += '-ci'; json.dump(m, open(sys.argv[2], 'w'))" \
  service/bundles/avatars/labelsets/faces/mapper.json "$TMPD/mapper.json"
t0=$(date +%s%N)
v2=$(put_labelset "${C#*=}" faces-ci "$TMPD/mapper.json")
echo "replaced faces-ci with $v2 on lcs-c: the PUT answered after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[ "$v2" != "$v1" ] || { echo "the replacement kept version $v1"; exit 1; }
wait_version "$v2" "$t0" "$C" "$A" "$B"
echo "docker check passed"
