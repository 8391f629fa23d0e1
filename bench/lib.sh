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

# The proxies under test other than Fulcrum, configured alike by every runner:
# nginx (nginx_proxy_conf) and HAProxy (haproxy_conf), round robin over the
# backends on B1 and B2 with kept-alive backend connections, listening on
# PROXY_PORT. Read WORKERS (1), MODE (proxy, cache or h2c), ROUTES (0: one
# server; N: one per host name site1.test ... siteN.test) and, for nginx,
# NGINX_SERVER_EXTRA (lines put in its one server block).
WORKERS=${WORKERS:-1}
MODE=${MODE:-proxy}
ROUTES=${ROUTES:-0}
NGINX_SERVER_EXTRA=${NGINX_SERVER_EXTRA:-}

nginx_proxy_conf() {
    mkdir -p "$RUN/nginx"
    # One worker: no master process, so that the process started is the one
    # that works. More: a master and WORKERS worker processes (counted with it).
    local master="master_process off;"
    [ "$WORKERS" -gt 1 ] && master=""
    cat >"$RUN/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
$master
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path $RUN/nginx/tmp-body;
    proxy_temp_path $RUN/nginx/tmp-proxy;
$(nginx_cache_zone)
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
$(nginx_servers)
}
EOF
}

# One server, or with ROUTES=N one per host name (site1.test ... siteN.test).
nginx_servers() {
    local location h2=""
    [ "$MODE" = h2c ] && h2=" http2"
    location=$(printf '        location / {\n            proxy_pass http://backends;\n            proxy_http_version 1.1;\n            proxy_set_header Connection "";\n%s\n        }' "$(nginx_cache_use)")
    # Several workers: a listening socket each, as Fulcrum's workers have.
    [ "$WORKERS" -gt 1 ] && h2="$h2 reuseport"
    if [ "$ROUTES" -eq 0 ]; then
        printf '    server {\n        listen 127.0.0.1:%s backlog=4096%s;\n%s%s\n    }\n' "$PROXY_PORT" "$h2" "$NGINX_SERVER_EXTRA" "$location"
        return
    fi
    echo "    server_names_hash_max_size $((ROUTES * 2 + 512));"
    echo "    server_names_hash_bucket_size 64;"
    local backlog=" backlog=4096$h2"
    for i in $(seq "$ROUTES"); do
        printf '    server {\n        listen 127.0.0.1:%s%s;\n        server_name site%s.test;\n%s\n    }\n' \
            "$PROXY_PORT" "$backlog" "$i" "$location"
        backlog=""
    done
}

nginx_cache_zone() {
    [ "$MODE" = cache ] || return 0
    echo "    proxy_cache_path $RUN/nginx/cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=1h use_temp_path=off;"
}

nginx_cache_use() {
    [ "$MODE" = cache ] || return 0
    echo "            proxy_cache bench;"
    echo "            proxy_cache_lock on;"
    echo "            add_header X-Cache-Status \$upstream_cache_status;"
}

haproxy_conf() {
    local frontend_cache="" backend_cache="" cache_section="" use_backend="    default_backend be"
    if [ "$ROUTES" -gt 0 ]; then
        seq "$ROUTES" | sed 's/.*/site&.test/' >"$RUN/hosts.lst"
        use_backend="    use_backend be if { req.hdr(host) -m str -f $RUN/hosts.lst }"
    fi
    if [ "$MODE" = cache ]; then
        # res.cache_hit tells hits apart in the answer, as nginx's X-Cache-Status does.
        frontend_cache="    http-response set-header X-Cache-Status HIT if { res.cache_hit }"
        backend_cache=$(printf '    http-request cache-use bench\n    http-response cache-store bench')
        cache_section=$(printf 'cache bench\n    total-max-size 256\n    max-object-size 1048576\n    max-age 3600')
    fi
    cat >"$RUN/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$PROXY_PORT$([ "$MODE" = h2c ] && echo " proto h2")
$frontend_cache
$use_backend
backend be
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
$backend_cache
$cache_section
EOF
}

# Stops one target by PID and forgets it.
stop_target() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for pid in "${PIDS[@]}"; do [ "$pid" != "$1" ] && keep+=("$pid"); done
    PIDS=("${keep[@]}")
}
