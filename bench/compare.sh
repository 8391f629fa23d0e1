#!/usr/bin/env bash
# Fulcrum against nginx and HAProxy as HTTP/1.1 reverse proxies, in one run.
#
# Two nginx instances answer as backends; each proxy (one worker, pinned with
# taskset to PROXY_CPU) round-robins over them with upstream keep-alive; wrk
# (pinned with the backends to LOAD_CPU) drives it. A "direct" row runs wrk
# straight at one backend. For every target: requests per second, latency
# percentiles, and CPU per request from /proc/PID/stat (user and system, the
# proxy's processes only). Ratios are taken within the run: only those carry
# over between machines.
#
#   bench/compare.sh                      # from the project root, after cargo build --release
#   ROUNDS=3 DURATION=10 bench/compare.sh
#
# Settings (environment): FULCRUM (binary, default target/release/fulcrum),
# DURATION (s per target, 5), WARMUP (s, 1), CONNS (64), ROUNDS (1),
# PROXIES ("fulcrum nginx haproxy": those not installed are skipped),
# PROXY_CPU (0), LOAD_CPU (1), BASE_PORT (23000). The target `fulcrum-log` in
# PROXIES is Fulcrum with its JSON access log on (written to /dev/null), for the
# log's cost in the same run.
# Needs: nginx (backends), wrk, taskset. Everything it starts is stopped by PID.
set -euo pipefail

FULCRUM=${FULCRUM:-target/release/fulcrum}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-1}
PROXIES=${PROXIES:-fulcrum nginx haproxy}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-23000}

B1=$((BASE_PORT + 1))
B2=$((BASE_PORT + 2))
PROXY_PORT=$((BASE_PORT + 10))
HZ=$(getconf CLK_TCK)

for tool in nginx wrk taskset; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is needed" >&2; exit 2; }
done
case " $PROXIES " in
*" fulcrum "* | *" fulcrum-log "*) [ -x "$FULCRUM" ] || { echo "compare.sh: no $FULCRUM (cargo build --release)" >&2; exit 2; } ;;
esac

RUN=$(mktemp -d /tmp/fulcrum-compare.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare.sh: nothing listens on $1" >&2
    return 1
}

backend_conf() { # NAME PORT
    mkdir -p "$RUN/$1"
    cat >"$RUN/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/$1/nginx.pid;
error_log $RUN/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path $RUN/$1/tmp;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { default_type text/plain; return 200 "$1\n"; }
    }
}
EOF
}

nginx_proxy_conf() {
    mkdir -p "$RUN/nginx"
    cat >"$RUN/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path $RUN/nginx/tmp-body;
    proxy_temp_path $RUN/nginx/tmp-proxy;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

haproxy_conf() {
    cat >"$RUN/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$PROXY_PORT
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
}

# Starts a target pinned to PROXY_CPU; sets TARGET_PID to the process doing the work.
start_target() {
    case $1 in
    fulcrum | fulcrum-log)
        local log=() err="$RUN/fulcrum.err"
        [ "$1" = fulcrum-log ] && log=(--access-log) && err=/dev/null
        FULCRUM_WORKERS=1 taskset -c "$PROXY_CPU" "$FULCRUM" proxy --from "127.0.0.1:$PROXY_PORT" \
            --to "http://127.0.0.1:$B1" --to "http://127.0.0.1:$B2" "${log[@]}" \
            >/dev/null 2>"$err" &
        ;;
    nginx)
        nginx_proxy_conf
        taskset -c "$PROXY_CPU" nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" 2>"$RUN/nginx.err" &
        ;;
    haproxy)
        haproxy_conf
        taskset -c "$PROXY_CPU" haproxy -db -f "$RUN/haproxy.cfg" >/dev/null 2>"$RUN/haproxy.err" &
        ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    wait_port "$PROXY_PORT"
}

stop_target() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for pid in "${PIDS[@]}"; do [ "$pid" != "$1" ] && keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

# utime and stime (clock ticks) of a process and its threads.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# wrk's latency line for a percentile, in ms.
pct_ms() {
    awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"
}

measure() { # NAME PORT PID(or empty)
    local name=$1 port=$2 pid=$3 out="$RUN/wrk-$1.txt"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null
    local before=(0 0) after=(0 0)
    [ -n "$pid" ] && read -r -a before < <(cpu_ticks "$pid")
    taskset -c "$LOAD_CPU" timeout $((DURATION + 30)) \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$out"
    [ -n "$pid" ] && read -r -a after < <(cpu_ticks "$pid")
    local reqs rps errors
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
    errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
        END { print n + 0 }' "$out")
    local user sys
    user=$(awk -v a="${after[0]}" -v b="${before[0]}" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz * 1e6 / n }')
    sys=$(awk -v a="${after[1]}" -v b="${before[1]}" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz * 1e6 / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$(pct_ms 50% "$out")" \
        "$(pct_ms 99% "$out")" "$errors" "$user" "$sys" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" >>"$RUN/rows.tsv"
}

backend_conf b1 "$B1"
backend_conf b2 "$B2"
for b in b1 b2; do
    port=$B1; [ $b = b2 ] && port=$B2
    taskset -c "$LOAD_CPU" nginx -c "$RUN/$b/nginx.conf" -p "$RUN/$b" 2>"$RUN/$b.err" &
    PIDS+=("$!")
    wait_port "$port"
done

: >"$RUN/rows.tsv"
targets=(direct)
for p in $PROXIES; do
    case $p in
    fulcrum | fulcrum-log) targets+=("$p") ;;
    nginx) targets+=(nginx) ;;
    haproxy) command -v haproxy >/dev/null && targets+=(haproxy) || echo "skipping haproxy: not installed" >&2 ;;
    *) echo "compare.sh: unknown proxy $p" >&2; exit 2 ;;
    esac
done
for round in $(seq "$ROUNDS"); do
    for t in "${targets[@]}"; do
        echo "round $round: $t" >&2
        if [ "$t" = direct ]; then
            measure direct "$B1" ""
        else
            start_target "$t"
            measure "$t" "$PROXY_PORT" "$TARGET_PID"
            stop_target "$TARGET_PID"
        fi
    done
done

# Medians per target, then ratios within this run.
awk -F'\t' '
function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
    for (c = 2; c <= 8; c++) col[$1, c] = col[$1, c] " " $c
}
END {
    for (i = 1; i <= k; i++) for (c = 2; c <= 8; c++) m[order[i], c] = median(col[order[i], c])
    cheapest = ""
    for (i = 1; i <= k; i++) {
        t = order[i]
        if (t != "direct" && t !~ /^fulcrum/ && (cheapest == "" || m[t, 8] < m[cheapest, 8])) cheapest = t
    }
    printf "| target | req/s | of direct | p50 ms | p99 ms | errors | user µs/req | sys µs/req | CPU µs/req | CPU vs %s |\n", (cheapest == "" ? "-" : cheapest)
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= k; i++) {
        t = order[i]
        cpu = (t == "direct") ? "" : sprintf("%.2f", m[t, 8])
        vs = (t == "direct" || cheapest == "") ? "" : sprintf("%.2f", m[t, 8] / m[cheapest, 8])
        printf "| %s | %.0f | %.3f | %s | %s | %s | %s | %s | %s | %s |\n", t, m[t, 2], m[t, 2] / m["direct", 2],
            m[t, 3], m[t, 4], m[t, 5], (t == "direct" ? "" : m[t, 6]), (t == "direct" ? "" : m[t, 7]), cpu, vs
    }
}' "$RUN/rows.tsv"
