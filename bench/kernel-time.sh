#!/usr/bin/env bash
# Where a proxy's system time per request goes, in one run: the same setup as
# bench/compare.sh (two nginx backends and wrk pinned to LOAD_CPU, the proxy
# pinned to PROXY_CPU, 64 keep-alive connections), and for each proxy, per
# request: user and system time, the wake-ups the proxy's CPU performs (the
# tracepoint sched:sched_waking counted on the proxy's process: mostly a backend
# or wrk waiting in epoll_wait, woken from the softirq that delivers a segment
# the proxy sent), the inter-processor interrupts it sends (ipi:ipi_send_cpu),
# its own context switches, and the TCP segments of the whole machine (nstat).
# With STRACE=1, a second pass per target counts system calls per request
# (`strace -c -f`: epoll_wait included; strace slows the proxy, the counts per
# request stay right; the idle second around the run adds a few timer wake-ups).
#
#   bench/kernel-time.sh
#   FULCRUM=a/fulcrum FULCRUM_B=b/fulcrum PROXIES="fulcrum fulcrum-b nginx" ROUNDS=3 bench/kernel-time.sh
#
# The target `nginx-slow` is nginx made slower in user space by SLOW (40)
# `set` directives evaluated per request: what the kernel time of a proxy does
# when only its user time changes. Settings (environment): FULCRUM (default
# target/release/fulcrum), FULCRUM_B, PROXIES ("fulcrum nginx nginx-slow
# haproxy"), ROUNDS (1), DURATION (s, 5), CONNS (64), SLOW, PROXY_CPU (0),
# LOAD_CPU (1), BASE_PORT (24000), STRACE (0). Needs nginx, wrk, taskset, perf,
# nstat; strace with STRACE=1. Everything it starts is stopped by PID.
set -euo pipefail

FULCRUM=${FULCRUM:-target/release/fulcrum}
FULCRUM_B=${FULCRUM_B:-}
PROXIES=${PROXIES:-fulcrum nginx nginx-slow haproxy}
ROUNDS=${ROUNDS:-1}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
SLOW=${SLOW:-40}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-24000}
STRACE=${STRACE:-0}
B1=$((BASE_PORT + 1))
B2=$((BASE_PORT + 2))
PROXY_PORT=$((BASE_PORT + 10))
HZ=$(getconf CLK_TCK)

for tool in nginx wrk taskset perf nstat; do
    command -v "$tool" >/dev/null || { echo "kernel-time.sh: $tool is needed" >&2; exit 2; }
done

. "$(dirname "$0")/lib.sh"

# nginx-slow: nginx_proxy_conf with SETS `set` directives in its server, which
# make each request cost more user time and change nothing else (no system
# call, no byte on the wire).
slow_sets() { # SETS; sets NGINX_SERVER_EXTRA
    NGINX_SERVER_EXTRA=""
    for i in $(seq "$1"); do
        NGINX_SERVER_EXTRA="$NGINX_SERVER_EXTRA        set \$v$i \$host\$request_uri\$remote_addr\$host\$request_uri\$remote_addr\$http_user_agent\$host;
"
    done
}

start_target() { # NAME; sets TARGET_PID
    case $1 in
    fulcrum | fulcrum-b)
        local bin=$FULCRUM
        [ "$1" = fulcrum-b ] && bin=$FULCRUM_B
        FULCRUM_WORKERS=1 taskset -c "$PROXY_CPU" "$bin" proxy --from "127.0.0.1:$PROXY_PORT" \
            --to "http://127.0.0.1:$B1" --to "http://127.0.0.1:$B2" >/dev/null 2>"$RUN/$1.err" &
        ;;
    nginx | nginx-slow)
        NGINX_SERVER_EXTRA=""
        [ "$1" = nginx-slow ] && slow_sets "$SLOW"
        nginx_proxy_conf
        taskset -c "$PROXY_CPU" nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" 2>"$RUN/nginx.err" &
        ;;
    haproxy)
        haproxy_conf
        taskset -c "$PROXY_CPU" haproxy -db -f "$RUN/haproxy.cfg" >/dev/null 2>"$RUN/haproxy.err" &
        ;;
    *) echo "kernel-time.sh: unknown proxy $1" >&2; exit 2 ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    wait_port "$PROXY_PORT"
}

wrk_run() { # SECONDS OUT
    taskset -c "$LOAD_CPU" timeout $(($1 + 30)) wrk -t1 -c"$CONNS" -d"${1}s" "http://127.0.0.1:$PROXY_PORT/" >"$2"
}

requests() { awk '/requests in/ { print $1 }' "$1"; }

measure() { # NAME PID
    local name=$1 pid=$2 u0 s0 u1 s1
    wrk_run 1 /dev/null
    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    nstat -n
    # Counted over the whole wrk run: started before it, stopped a second after
    # it ends (the proxy is idle then: nothing to count).
    perf stat -x, -e sched:sched_waking,ipi:ipi_send_cpu,context-switches -p "$pid" \
        -o "$RUN/perf.txt" -- sleep $((DURATION + 1)) >/dev/null 2>&1 &
    local perf_pid=$!
    wrk_run "$DURATION" "$RUN/wrk.txt"
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    nstat >"$RUN/nstat.txt" || true
    wait "$perf_pid" || true
    local n
    n=$(requests "$RUN/wrk.txt")
    awk -v name="$name" -v round="$round" -v n="$n" -v hz="$HZ" -v d="$DURATION" \
        -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        -v perf="$RUN/perf.txt" -v nstat="$RUN/nstat.txt" 'BEGIN {
        FS = ","
        while ((getline l < perf) > 0) { split(l, f, ","); if (f[3] != "") c[f[3]] = f[1] }
        FS = " "
        while ((getline l < nstat) > 0) { split(l, f, " "); t[f[1]] = f[2] }
        printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%.3f\t%.3f\t%.4f\t%.2f\t%.4f\t%s\n", name, round, n / d,
            u / hz * 1e6 / n, s / hz * 1e6 / n, c["sched:sched_waking"] / n,
            c["ipi:ipi_send_cpu"] / n, c["context-switches"] / n,
            t["TcpOutSegs"] / n, t["TcpExtDelayedACKs"] / n, load
    }' >>"$RUN/rows.tsv"
}

# System calls per request: a pass of its own, since strace slows the proxy.
count_syscalls() { # NAME PID
    wrk_run 1 /dev/null
    # strace watches the whole wrk run (and a little idle time around it).
    timeout -s INT $((DURATION + 2)) strace -c -f -p "$2" -o "$RUN/strace.txt" 2>/dev/null &
    local strace_pid=$!
    sleep 0.5
    wrk_run "$DURATION" "$RUN/wrk.txt"
    wait "$strace_pid" || true
    local n
    n=$(requests "$RUN/wrk.txt")
    awk -v name="$1" -v n="$n" '
        $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { printf "%s %s %.3f/req;", name, $NF, $4 / n }
        END { print "" }' "$RUN/strace.txt" | tr ';' '\n' | awk 'NF && $3 + 0 >= 0.01' >>"$RUN/syscalls.txt"
}

for b in b1 b2; do
    port=$B1; [ $b = b2 ] && port=$B2
    start_nginx_backend $b "$port" "        location / { default_type text/plain; return 200 \"$b\\n\"; }"
done
: >"$RUN/rows.tsv"
: >"$RUN/syscalls.txt"
targets=()
for p in $PROXIES; do
    case $p in
    haproxy) command -v haproxy >/dev/null && targets+=(haproxy) || echo "skipping haproxy: not installed" >&2 ;;
    *) targets+=("$p") ;;
    esac
done
started=$(date -u +%Y-%m-%dT%H:%MZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
        t=${targets[$(((i + round - 1) % n))]}
        echo "round $round: $t" >&2
        start_target "$t"
        measure "$t" "$TARGET_PID"
        [ "$STRACE" = 1 ] && [ "$round" = 1 ] && count_syscalls "$t" "$TARGET_PID"
        stop_target "$TARGET_PID"
    done
done

echo "Run of $started, $ROUNDS round(s) of $DURATION s, $CONNS connections, proxy on CPU $PROXY_CPU," \
    "wrk and backends on CPU $LOAD_CPU; load average at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg)."
[ -n "$FULCRUM_B" ] && echo "fulcrum: $FULCRUM; fulcrum-b: $FULCRUM_B."
echo
echo "Medians per target (per request):"
echo
awk -F'\t' '
function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
    for (c = 3; c <= 10; c++) col[$1, c] = col[$1, c] " " $c
}
END {
    print "| target | req/s | user µs | sys µs | wake-ups | IPIs | own switches | TCP segments | delayed ACKs |"
    print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (i = 1; i <= k; i++) {
        t = order[i]
        printf "| %s | %.0f | %.2f | %.2f | %.3f | %.3f | %.4f | %.2f | %.4f |\n", t, median(col[t, 3]), median(col[t, 4]),
            median(col[t, 5]), median(col[t, 6]), median(col[t, 7]), median(col[t, 8]), median(col[t, 9]), median(col[t, 10])
    }
}' "$RUN/rows.tsv"
echo
echo "Per round:"
echo
echo "| round | target | req/s | user µs | sys µs | wake-ups | IPIs | own switches | TCP segments | delayed ACKs | load |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$RUN/rows.tsv"
if [ -s "$RUN/syscalls.txt" ]; then
    echo
    echo "System calls per request (strace -c -f, round 1):"
    echo
    awk '{ s[$1] = s[$1] (s[$1] == "" ? "" : ", ") $2 " " $3 } END { for (t in s) print "- " t ": " s[t] }' "$RUN/syscalls.txt" | sort
fi
