#!/usr/bin/env bash
# Docker discovery figures, against the real engine:
#  1. time from the engine's event (a container without HEALTHCHECK started, or
#     one with a HEALTHCHECK turned healthy) to Fulcrum routing it (its log line)
#     and to the first 200 a polling client gets (a request sent while the pool
#     is empty waits, retrying every `try_interval`, 250 ms by default);
#  2. failed requests during a rolling update of 3 replicas (start a new one,
#     wait until it is routed, `docker stop` an old one; three times) under a
#     64-connection wrk load.
# Usage (from the project root): bench/discovery.sh [FULCRUM_BINARY] [SERVER_BINARY]
# SERVER_BINARY: the static test server the discovery tests build
# (target/tmp/docker-srv/srv after `cargo test --test discovery`).
set -euo pipefail
FULCRUM=${1:-target/release/fulcrum}
SRV=${2:-target/tmp/docker-srv/srv}
ROUNDS=${ROUNDS:-5}
P=fulcrum-bench-$$
DIR=$(mktemp -d)
FPID=""
cleanup() {
  [ -n "$FPID" ] && kill "$FPID" 2>/dev/null || true
  ids=$(docker ps -aq --filter "name=$P")
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
  docker rmi -f "$P-srv" "$P-srv-hc" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

cp "$SRV" "$DIR/srv"
printf 'FROM scratch\nCOPY srv /srv\nEXPOSE 8080\nENTRYPOINT ["/srv"]\n' >"$DIR/Dockerfile"
docker build -q -t "$P-srv" "$DIR" >/dev/null 2>&1
printf 'FROM %s\nHEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD ["/srv", "check"]\n' "$P-srv" >"$DIR/Dockerfile"
docker build -q -t "$P-srv-hc" "$DIR" >/dev/null 2>&1

cat >"$DIR/f.yaml" <<EOF
listeners: ["127.0.0.1:18480"]
admin: { address: "127.0.0.1:18490" }
access_log: { enabled: false }
discovery: { docker: {} }
EOF
"$FULCRUM" run -c "$DIR/f.yaml" >"$DIR/f.log" 2>&1 &
FPID=$!
until curl -s -o /dev/null http://127.0.0.1:18490/api/v1/discovery; do sleep 0.1; done

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Waits until HOST answers 200 through Fulcrum; prints the time (ms).
first_200() {
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $1" http://127.0.0.1:18480/)" = 200 ]; do sleep 0.005; done
  now_ms
}

# The time (ms) of the engine's first event of container $1 whose action matches $2.
event_ms() { echo $(( $(grep -m1 "$2" "$DIR/ev-$1" | cut -d' ' -f1) / 1000000 )); }
# The time (ms) of Fulcrum's log line saying container $1 is routed and eligible.
routed_ms() {
  until grep -q "container=$1 state=\"eligible\"" "$DIR/f.log"; do sleep 0.05; done
  date -d "$(grep -m1 "container=$1 state=\"eligible\"" "$DIR/f.log" | cut -d' ' -f1)" +%s%3N
}

echo "== 1. engine event -> routed by Fulcrum (ms), $ROUNDS rounds"
for i in $(seq 1 "$ROUNDS"); do
  for kind in run hc; do
    name="$P-$kind$i"
    docker events --filter "container=$name" --format '{{.TimeNano}} {{.Action}}' >"$DIR/ev-$name" &
    ev=$!
    image="$P-srv"; [ $kind = hc ] && image="$P-srv-hc"
    sleep 0.2
    docker run -d --name "$name" -e "VIRTUAL_HOST=$kind$i.bench" "$image" >/dev/null
    served=$(first_200 "$kind$i.bench")
    routed=$(routed_ms "$name")
    sleep 0.2
    kill $ev 2>/dev/null || true
    if [ $kind = run ]; then
      t=$(event_ms "$name" ' start$')
      line="round $i: no HEALTHCHECK: start event -> routed $((routed - t)) ms, -> first 200 $((served - t)) ms;"
    else
      t=$(event_ms "$name" 'health_status: healthy')
      echo "$line HEALTHCHECK: healthy event -> routed $((routed - t)) ms, -> first 200 $((served - t)) ms"
    fi
  done
  docker rm -f "$P-run$i" "$P-hc$i" >/dev/null
done

echo "== 2. rolling update of 3 replicas under 64 connections"
for i in 1 2 3; do
  docker run -d --name "$P-old$i" -e VIRTUAL_HOST=app.bench -e NAME="old$i" -e STOP_GRACE_MS=2000 "$P-srv" >/dev/null
done
first_200 app.bench >/dev/null
wrk -t2 -c64 -d25s -H 'Host: app.bench' http://127.0.0.1:18480/ >"$DIR/wrk.txt" &
wrk_pid=$!
sleep 3
for i in 1 2 3; do
  docker run -d --name "$P-new$i" -e VIRTUAL_HOST=app.bench -e NAME="new$i" -e STOP_GRACE_MS=2000 "$P-srv" >/dev/null
  until curl -s http://127.0.0.1:18490/api/v1/discovery | grep -q "\"name\":\"$P-new$i\"[^}]*\"state\":\"eligible\""; do sleep 0.05; done
  docker stop -t 10 "$P-old$i" >/dev/null
done
wait $wrk_pid
cat "$DIR/wrk.txt"
grep -E "Non-2xx|Socket errors" "$DIR/wrk.txt" || echo "failed requests: 0 (no non-2xx responses, no socket errors)"
