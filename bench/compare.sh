#!/usr/bin/env bash
# Fulcrum against nginx and HAProxy as HTTP/1.1 reverse proxies, in one run.
#
# Two nginx instances answer as backends; each proxy (WORKERS workers, 1 by
# default, pinned with taskset to PROXY_CPU) round-robins over them with
# upstream keep-alive; wrk (pinned with the backends to LOAD_CPU) drives it.
# A "direct" row runs wrk straight at one backend. For every target: requests
# per second, latency percentiles, and CPU per request from /proc/PID/stat
# (user and system, the proxy's processes only). Ratios are taken within the
# run: only those carry over between machines.
#
#   bench/compare.sh                      # from the project root, after cargo build --release
#   ROUNDS=3 DURATION=10 bench/compare.sh
#   FULCRUM_B=path/to/other/fulcrum LABEL=new LABEL_B=old ROUNDS=3 bench/compare.sh   # two builds, one run
#   MODE=cache ROUNDS=3 bench/compare.sh  # cache hits: Fulcrum's cache, nginx proxy_cache, HAProxy cache
#   POST_BYTES=200 bench/compare.sh       # every request a POST with a 200-byte body
#
# Settings (environment): FULCRUM (binary, default target/release/fulcrum),
# LABEL (its name in the table, "fulcrum"), FULCRUM_B (a second Fulcrum binary:
# adds the target `fulcrum-b` to the default PROXIES), LABEL_B (its name,
# "fulcrum-b"), DURATION (s per target, 5), WARMUP (s, 1), CONNS (64),
# ROUNDS (1), PROXIES ("fulcrum nginx haproxy", plus "fulcrum-b" with
# FULCRUM_B: those not installed are skipped), PROXY_CPU (0), LOAD_CPU (1),
# BASE_PORT (23000), WORKERS (1: Fulcrum's worker threads, nginx's worker
# processes, each with a SO_REUSEPORT socket when more than one, HAProxy's
# threads; with more, give PROXY_CPU a CPU list, e.g. 0,1), MODE (proxy,
# cache or h2c), KEEP (a directory: the raw rows and wrk outputs are copied
# there), ROUTES (0: with N, every proxy has N routes by host name,
# site1.test ... siteN.test, Fulcrum started with `fulcrum run`, and wrk asks
# for the last one), POST_BYTES (MODE=proxy: wrk sends POSTs with a body of
# that many bytes instead of GETs). The targets `fulcrum-log` and
# `fulcrum-b-log` are Fulcrum with its JSON access log on (written to
# /dev/null), for the log's cost in the same run.
#
# MODE=h2c: h2load (H2_CONNS connections, 16, with H2_STREAMS streams each, 4)
# speaks h2c with prior knowledge to each proxy (HTTP/1.1 to the backends);
# the latency columns are h2load's mean and max; the direct row is HTTP/1.1
# (h2load then pipelines H2_STREAMS requests per connection).
#
# MODE=cache: the backends serve files with `Cache-Control: max-age=3600`
# (PATHS, default "/small /16k": 13 bytes and 16 KiB), each proxy caches them
# (Fulcrum: a route with `cache:`, started with `fulcrum run`; nginx:
# proxy_cache with proxy_cache_lock; HAProxy: its cache), and every target is
# warmed up before it is measured, so wrk sees hits only. One table per path;
# the column "backend requests" counts what reached the backends during the
# measured run (read from their stub_status: 0 means every answer was a hit),
# "cache header" is the proxy's cache status header on a request sent after it.
# Needs: nginx (backends), wrk, taskset; curl for MODE=cache, h2load for MODE=h2c. Everything it
# starts is stopped by PID.
set -euo pipefail

FULCRUM=${FULCRUM:-target/release/fulcrum}
LABEL=${LABEL:-fulcrum}
FULCRUM_B=${FULCRUM_B:-}
LABEL_B=${LABEL_B:-fulcrum-b}
MODE=${MODE:-proxy}
ROUTES=${ROUTES:-0}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-4}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-1}
DEFAULT_PROXIES="fulcrum nginx haproxy"
[ -n "$FULCRUM_B" ] && DEFAULT_PROXIES="fulcrum fulcrum-b nginx haproxy"
PROXIES=${PROXIES:-$DEFAULT_PROXIES}
PROXY_CPU=${PROXY_CPU:-0}
WORKERS=${WORKERS:-1}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-23000}

B1=$((BASE_PORT + 1))
B2=$((BASE_PORT + 2))
PROXY_PORT=$((BASE_PORT + 10))
HZ=$(getconf CLK_TCK)

case $MODE in
proxy | h2c) PATHS=/ ;;
cache) PATHS=${PATHS:-/small /16k} ;;
*) echo "compare.sh: MODE is proxy, cache or h2c, not $MODE" >&2; exit 2 ;;
esac
needed="nginx wrk taskset"
[ "$MODE" = cache ] && needed="$needed curl"
[ "$MODE" = h2c ] && needed="nginx h2load taskset"
for tool in $needed; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is needed" >&2; exit 2; }
done
case " $PROXIES " in
*" fulcrum "* | *" fulcrum-log "*) [ -x "$FULCRUM" ] || { echo "compare.sh: no $FULCRUM (cargo build --release)" >&2; exit 2; } ;;
esac
case " $PROXIES " in
*" fulcrum-b "* | *" fulcrum-b-log "*) [ -n "$FULCRUM_B" ] && [ -x "$FULCRUM_B" ] ||
    { echo "compare.sh: fulcrum-b needs FULCRUM_B, an executable" >&2; exit 2; } ;;
esac

. "$(dirname "$0")/lib.sh"

# What a backend answers: a fixed text, or in cache mode cacheable files and a
# request counter.
backend_locations() { # NAME
    if [ "$MODE" = cache ]; then
        echo "        location / { root $RUN/www; default_type text/plain; add_header Cache-Control \"max-age=3600\"; }"
        echo "        location = /bench-status { stub_status; }"
    else
        echo "        location / { default_type text/plain; return 200 \"$1\\n\"; }"
    fi
}

# Requests a backend has served so far, this status request included.
backend_requests() { # PORT
    curl -sf "http://127.0.0.1:$1/bench-status" | awk 'NR == 3 { print $3 }'
}

# Fulcrum for `fulcrum run` (MODE=cache or ROUTES=N): one route over the two
# backends, or N routes by host name; with `cache:` in MODE=cache; its access
# log, if on, to /dev/null.
fulcrum_conf() { # LOG(true/false)
    local cache=""
    [ "$MODE" = cache ] && cache=", cache: { max_size: 256MiB }"
    {
        cat <<EOF
listeners:
  - address: "127.0.0.1:$PROXY_PORT"
admin: { enabled: false }
access_log: { enabled: $1, path: /dev/null }
pools:
  - name: app
    backends: ["127.0.0.1:$B1", "127.0.0.1:$B2"]
routes:
EOF
        if [ "$ROUTES" -eq 0 ]; then
            echo "  - { pool: app$cache }"
        else
            seq "$ROUTES" | sed "s/.*/  - { host: site&.test, pool: app$cache }/"
        fi
    } >"$RUN/fulcrum.yaml"
}

# Starts a target pinned to PROXY_CPU; sets TARGET_PID to the process doing the work.
start_target() {
    case $1 in
    fulcrum | fulcrum-log | fulcrum-b | fulcrum-b-log)
        local bin=$FULCRUM err="$RUN/$1.err" log=false
        case $1 in fulcrum-b*) bin=$FULCRUM_B ;; esac
        # The access log goes to stderr with `proxy --access-log`.
        case $1 in *-log) log=true && err=/dev/null ;; esac
        if [ "$MODE" = cache ] || [ "$ROUTES" -gt 0 ]; then
            fulcrum_conf "$log"
            FULCRUM_WORKERS=$WORKERS taskset -c "$PROXY_CPU" "$bin" run -c "$RUN/fulcrum.yaml" >/dev/null 2>"$err" &
        else
            local args=()
            $log && args=(--access-log)
            FULCRUM_WORKERS=$WORKERS taskset -c "$PROXY_CPU" "$bin" proxy --from "127.0.0.1:$PROXY_PORT" \
                --to "http://127.0.0.1:$B1" --to "http://127.0.0.1:$B2" "${args[@]}" \
                >/dev/null 2>"$err" &
        fi
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

# utime and stime (clock ticks) of a process and its threads, and of its
# child processes (nginx's workers when it runs more than one).
cpu_ticks() {
    local procs=("/proc/$1/stat")
    for child in $(pgrep -P "$1"); do procs+=("/proc/$child/stat"); done
    awk '{ u += $14; s += $15 } END { print u, s }' "${procs[@]}" 2>/dev/null
}

# wrk's latency line for a percentile, in ms.
pct_ms() {
    awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"
}

# The cache status header of one answer (MODE=cache), e.g. "fulcrum; hit; ttl=3599" or "HIT".
cache_header() { # PORT PATH
    local host=()
    [ "$ROUTES" -gt 0 ] && host=(-H "Host: site$ROUTES.test")
    curl -sf -o /dev/null -D - "${host[@]}" "http://127.0.0.1:$1$2" |
        awk -F': *' 'tolower($1) == "cache-status" || tolower($1) == "x-cache-status" { sub(/\r$/, "", $2); print $2 }'
}

# One load run at URL for SECONDS into OUT: wrk, or h2load in MODE=h2c (h2c with
# prior knowledge, HTTP/1.1 for the direct row, whose backend speaks only that).
load() { # NAME URL SECONDS OUT
    local host=()
    [ "$ROUTES" -gt 0 ] && host=(-H "Host: site$ROUTES.test")
    if [ "$MODE" = h2c ]; then
        local proto=()
        [ "$1" = direct ] && proto=(--h1)
        taskset -c "$LOAD_CPU" timeout $(($3 + 30)) \
            h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$3" "${proto[@]}" "${host[@]}" "$2" >"$4"
    else
        local script=()
        if [ -n "${POST_BYTES:-}" ]; then
            printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "text/plain"\n' \
                "$POST_BYTES" >"$RUN/post.lua"
            script=(-s "$RUN/post.lua")
        fi
        taskset -c "$LOAD_CPU" timeout $(($3 + 30)) \
            wrk -t1 -c"$CONNS" -d"${3}s" --latency "${script[@]}" "${host[@]}" "$2" >"$4"
    fi
}

# h2load's "time for request" figure in ms: COLUMN 5 is the max, 6 the mean.
h2load_ms() { # COLUMN FILE
    awk -v c="$1" '/^time for request:/ { v = $c; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"
}

measure() { # NAME PORT PID(or empty) PATH
    local name=$1 port=$2 pid=$3 path=$4 out="$RUN/load.txt"
    local url="http://127.0.0.1:$port$path"
    load "$name" "$url" "$WARMUP" /dev/null
    local before=(0 0) after=(0 0) served_before=0 served_after=0
    [ "$MODE" = cache ] && served_before=$(($(backend_requests "$B1") + $(backend_requests "$B2")))
    [ -n "$pid" ] && read -r -a before < <(cpu_ticks "$pid")
    load "$name" "$url" "$DURATION" "$out"
    [ -n "$pid" ] && read -r -a after < <(cpu_ticks "$pid")
    local backend="" header=""
    if [ "$MODE" = cache ]; then
        served_after=$(($(backend_requests "$B1") + $(backend_requests "$B2")))
        # Less the two status requests of the second reading.
        backend=$((served_after - served_before - 2))
        header=$(cache_header "$port" "$path")
    fi
    { echo "== round $round, $name $path"; cat "$out"; } >>"$RUN/load-all.txt"
    local reqs rps errors lat1 lat2
    if [ "$MODE" = h2c ]; then
        # Requests still in flight when h2load stops count as failed: they are not errors.
        reqs=$(awk '/^requests:/ { print $8 }' "$out")
        rps=$(awk '/^finished in/ { print $4 }' "$out")
        errors=$(awk '/^status codes:/ { gsub(",", ""); print $5 + $7 + $9 } ' "$out")
        lat1=$(h2load_ms 6 "$out")
        lat2=$(h2load_ms 5 "$out")
    else
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
        errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
            END { print n + 0 }' "$out")
        lat1=$(pct_ms 50% "$out")
        lat2=$(pct_ms 99% "$out")
    fi
    local user sys
    user=$(awk -v a="${after[0]}" -v b="${before[0]}" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz * 1e6 / n }')
    sys=$(awk -v a="${after[1]}" -v b="${before[1]}" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz * 1e6 / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$path" "$rps" "$lat1" "$lat2" \
        "$errors" "$user" "$sys" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "${backend:--}" "${header:--}" \
        "$(cut -d' ' -f1 /proc/loadavg)" "$round" >>"$RUN/rows.tsv"
}

if [ "$MODE" = cache ]; then
    # The backends' workers do not run as root: the files must be readable by anyone.
    chmod 755 "$RUN"
    mkdir -p "$RUN/www"
    printf 'hello, world\n' >"$RUN/www/small"
    head -c 16384 /dev/zero | tr '\0' x >"$RUN/www/16k"
fi
start_nginx_backend b1 "$B1" "$(backend_locations b1)"
start_nginx_backend b2 "$B2" "$(backend_locations b2)"

: >"$RUN/rows.tsv"
targets=(direct)
for p in $PROXIES; do
    case $p in
    fulcrum | fulcrum-log | fulcrum-b | fulcrum-b-log) targets+=("$p") ;;
    nginx) targets+=(nginx) ;;
    haproxy) command -v haproxy >/dev/null && targets+=(haproxy) || echo "skipping haproxy: not installed" >&2 ;;
    *) echo "compare.sh: unknown proxy $p" >&2; exit 2 ;;
    esac
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%MZ)
for round in $(seq "$ROUNDS"); do
    # Each round starts one target later, so no target always runs right after the same one.
    order=()
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do order+=("${targets[$(((i + round - 1) % n))]}"); done
    for t in "${order[@]}"; do
        echo "round $round: $t" >&2
        if [ "$t" = direct ]; then
            for path in $PATHS; do measure direct "$B1" "" "$path"; done
        else
            start_target "$t"
            for path in $PATHS; do measure "$t" "$PROXY_PORT" "$TARGET_PID" "$path"; done
            stop_target "$TARGET_PID"
        fi
    done
done

clients="$CONNS connections"
[ "$MODE" = h2c ] && clients="$H2_CONNS connections x $H2_STREAMS streams"
[ -n "${POST_BYTES:-}" ] && [ "$MODE" = proxy ] && clients="$clients, POSTs of $POST_BYTES bytes"
echo "Run of $started, MODE=$MODE, ROUTES=$ROUTES, $ROUNDS round(s) of ${DURATION} s, $clients, proxy on CPU $PROXY_CPU (Fulcrum: $WORKERS worker(s))," \
    "wrk and backends on CPU $LOAD_CPU; load average at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg)."
[ -n "$FULCRUM_B" ] && echo "$LABEL: $FULCRUM; $LABEL_B: $FULCRUM_B."

# Medians per target (one table per path), then ratios within this run: CPU
# against the cheaper of nginx and HAProxy.
for path in $PATHS; do
    echo
    [ "$MODE" = cache ] && echo "Path $path:" && echo
    awk -F'\t' -v path="$path" -v mode="$MODE" -v label_a="$LABEL" -v label_b="$LABEL_B" '
    function median(list,    n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function label(t) {
        if (t == "fulcrum") return label_a
        if (t == "fulcrum-log") return label_a ", JSON access log"
        if (t == "fulcrum-b") return label_b
        if (t == "fulcrum-b-log") return label_b ", JSON access log"
        return t
    }
    $2 == path {
        if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
        for (c = 3; c <= 9; c++) col[$1, c] = col[$1, c] " " $c
        backend[$1] = backend[$1] (backend[$1] == "" ? "" : ", ") $10
        header[$1] = $11
    }
    END {
        for (i = 1; i <= k; i++) for (c = 3; c <= 9; c++) m[order[i], c] = median(col[order[i], c])
        cheapest = ""
        for (i = 1; i <= k; i++) {
            t = order[i]
            if ((t == "nginx" || t == "haproxy") && (cheapest == "" || m[t, 9] < m[cheapest, 9])) cheapest = t
        }
        latency = mode == "h2c" ? "mean ms | max ms" : "p50 ms | p99 ms"
        extra_head = mode == "cache" ? " backend requests | cache header |" : ""
        printf "| target | req/s | of direct | %s | errors | user µs/req | sys µs/req | CPU µs/req | CPU vs %s |%s\n", latency, (cheapest == "" ? "-" : cheapest), extra_head
        printf "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |%s\n", (mode == "cache" ? " --- | --- |" : "")
        for (i = 1; i <= k; i++) {
            t = order[i]
            cpu = (t == "direct") ? "" : sprintf("%.2f", m[t, 9])
            vs = (t == "direct" || cheapest == "") ? "" : sprintf("%.2f", m[t, 9] / m[cheapest, 9])
            extra = mode == "cache" ? sprintf(" %s | %s |", backend[t], header[t]) : ""
            printf "| %s | %.0f | %.3f | %s | %s | %s | %s | %s | %s | %s |%s\n", label(t), m[t, 3], m[t, 3] / m["direct", 3],
                m[t, 4], m[t, 5], m[t, 6], (t == "direct" ? "" : m[t, 7]), (t == "direct" ? "" : m[t, 8]), cpu, vs, extra
        }
    }' "$RUN/rows.tsv"
done

# Every measurement, for telling a disturbed round from the others.
echo
echo "Per round (load = 1-minute load average after the measurement):"
echo
echo "| round | target | path | req/s | user µs/req | sys µs/req | CPU µs/req | load |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
awk -F'\t' '{ d = $1 == "direct"; printf "| %s | %s | %s | %.0f | %s | %s | %s | %s |\n", $13, $1, $2, $3,
    d ? "" : $7, d ? "" : $8, d ? "" : $9, $12 }' "$RUN/rows.tsv"
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$RUN/rows.tsv" "$RUN/load-all.txt" "$KEEP/"
fi
