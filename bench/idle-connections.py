#!/usr/bin/env python3
"""Memory per idle client connection.

Starts a small keep-alive HTTP/1.1 backend and Fulcrum in front of it (one
worker thread, access log off, `header_read_timeout: 120s` so that no idle
connection is closed before the reading), reads Fulcrum's RSS, opens CONNS
client connections (one request on every tenth, answered, then every connection
idles), reads the RSS again, checks that every connection is still open, and
prints both readings with the difference per connection.

    bench/idle-connections.py [--binary target/release/fulcrum] [--conns 10000]
    bench/idle-connections.py --nginx [--conns 10000]

`--nginx` measures nginx the same way instead (one worker process, no master,
`proxy_pass` with upstream keep-alive, access log off, 120 s client timeouts),
for a comparison on the same machine.

Everything runs on 127.0.0.1 with ephemeral ports; everything started is stopped
on exit. The open-file limit is raised to its hard limit for this process and
for Fulcrum (CONNS needs about CONNS + 100 descriptors on each side).
"""

import argparse
import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def backend_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


CONFIG = """
listeners: ["127.0.0.1:{port}"]
access_log: {{ enabled: false }}
limits: {{ header_read_timeout: 120s }}
pools:
  - name: app
    backends: ["127.0.0.1:{backend}"]
routes:
  - pool: app
"""


NGINX_CONFIG = """
worker_processes 1;
worker_rlimit_nofile {files};
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {files}; }}
http {{
    access_log off;
    keepalive_timeout 120s;
    client_header_timeout 120s;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    upstream app {{ server 127.0.0.1:{backend}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_proxy(args, port, bport):
    """The proxy under test, its config kept alive with it: (process, name, config)."""
    if args.nginx:
        conf = tempfile.TemporaryDirectory(prefix="nginx-idle.")
        path = os.path.join(conf.name, "nginx.conf")
        with open(path, "w") as f:
            files = args.conns * 2 + 200
            f.write(NGINX_CONFIG.format(dir=conf.name, port=port, backend=bport, files=files))
        proc = subprocess.Popen(["nginx", "-c", path, "-p", conf.name], preexec_fn=raise_nofile)
        return proc, "nginx", conf
    env = dict(os.environ, FULCRUM_WORKERS=str(args.workers), RUST_LOG="warn")
    conf = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="fulcrum-idle.")
    conf.write(CONFIG.format(port=port, backend=bport))
    conf.flush()
    proc = subprocess.Popen(
        [args.binary, "run", "-c", conf.name], env=env, preexec_fn=raise_nofile
    )
    return proc, "fulcrum", conf


REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one_client(port, send, held, sem):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if send:
            writer.write(REQUEST)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:40]!r}")
        held.append((reader, writer))


async def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def main(args):
    limit = raise_nofile()
    if limit < args.conns + 200:
        sys.exit(f"open-file limit {limit} is too low for {args.conns} connections")
    backend = await asyncio.start_server(backend_conn, "127.0.0.1", 0, backlog=1024)
    bport = backend.sockets[0].getsockname()[1]
    port = free_port()
    proc, name, _conf = start_proxy(args, port, bport)
    held = []
    try:
        await wait_port(port, time.monotonic() + 20)
        await one_client(port, True, held, asyncio.Semaphore(1))
        held.pop()[1].close()
        await asyncio.sleep(1)
        before = rss_kib(proc.pid)
        sem = asyncio.Semaphore(200)
        tasks = [
            one_client(port, args.every > 0 and i % args.every == 0, held, sem)
            for i in range(args.conns)
        ]
        await asyncio.gather(*tasks)
        await asyncio.sleep(args.settle)
        after = rss_kib(proc.pid)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited")
        closed = sum(1 for r, _ in held if r.at_eof())
        if closed:
            raise RuntimeError(f"{closed} connections were closed before the reading")
        per = (after - before) * 1024 / args.conns
        served = len(range(0, args.conns, args.every)) if args.every > 0 else 0
        print(f"connections: {len(held)} open, {served} of them served one request")
        print(f"{name} RSS before: {before / 1024:.1f} MiB")
        print(f"{name} RSS with the connections idle: {after / 1024:.1f} MiB")
        print(f"per idle connection: {per:.0f} bytes")
    finally:
        # Tear-down noise (the backend's handlers cancelled mid-read) is not news.
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
        for _, w in held:
            w.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        backend.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default="target/release/fulcrum")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--every", type=int, default=10, help="one request on every Nth connection (0: none)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--nginx", action="store_true", help="measure nginx (from PATH) instead of Fulcrum")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    asyncio.run(main(p.parse_args()))
