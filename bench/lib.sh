# Shared by the benchmark runners (sourced, not run): a scratch directory that
# is removed at exit together with every process started (stopped by PID), a
# wait for a port, and the nginx instances that act as backends. Set LOAD_CPU
# before sourcing; it sets RUN and PIDS.

BENCH_NAME=$(basename "$0")
RUN=$(mktemp -d "/tmp/fulcrum-${BENCH_NAME%.sh}.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

wait_port() { # PORT
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$BENCH_NAME: nothing listens on $1" >&2
    return 1
}

# An nginx backend NAME on PORT, pinned to LOAD_CPU, serving LOCATIONS (the
# `location` lines of its one server), with keep-alive that never runs out.
start_nginx_backend() { # NAME PORT LOCATIONS
    mkdir -p "$RUN/$1"
    cat >"$RUN/$1/nginx.conf" <<CONF
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
$3
    }
}
CONF
    taskset -c "$LOAD_CPU" nginx -c "$RUN/$1/nginx.conf" -p "$RUN/$1" 2>"$RUN/$1.err" &
    PIDS+=("$!")
    wait_port "$2"
}
