#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind.

Runs `fulcrum proxy` (one worker thread) under `valgrind --tool=callgrind` in
front of a small keep-alive HTTP/1.1 backend, sends N requests one after the
other over one keep-alive client connection, stops Fulcrum, and reads the
instruction total. It does so for N and for 2N requests: the difference divided
by N is the cost of one request with start-up and shutdown taken out. The
counts do not depend on the machine's load, unlike timings.

    bench/callgrind.py [--binary target/profiling/fulcrum] [--requests 2000]
                       [--access-log] [--routes N] [--post BYTES] [--keep DIR]
                       [--clock-reads] [--trusted] [--conns N]

`--post BYTES` sends each request as a POST with a `Content-Length` body of
BYTES bytes (head and body in one write, as a form post or a JSON API call
usually arrives) instead of a GET.

`--conns N` spreads the requests over N keep-alive client connections that
send at once, each one request at a time (N = 1, the default: one connection).
With several, the runtime finds more than one connection ready when it wakes,
and parks less often per request, as under a load generator; the count is
still bounded (the first run's requests over N connections, then twice as
many), so the difference is still per request.

`--routes N` runs `fulcrum run` with N routes by host name (site1.test ...
siteN.test) instead of `fulcrum proxy`, and asks for the last one: the cost of
routing against the size of the table. With `--trusted` the client is a
trusted proxy in that config, so the forwarding fields go through the
request's map (the path of requests that come through another proxy).

`--keep DIR` leaves both callgrind output files in DIR for callgrind_annotate
(build with `cargo build --profile profiling` for function names and lines).

`--clock-reads` also counts the clock reads of a request: calls of libc's
`clock_gettime` (a system call under valgrind, so outside the instruction
count), by the function that asked for the time. Calls through std's
`Instant`/`SystemTime` and tokio's `Instant` are traced back to their callers;
the rest are direct calls, which is how `clock.rs` reads the coarse clocks.
"""

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: bench\r\n"
    b"Date: Sun, 29 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 13\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b"hello, world\n"
)


async def backend_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def request_bytes(port, host, post):
    host = host or f"127.0.0.1:{port}"
    if post is None:
        return f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    body = b"x" * post
    return (
        f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def one_conn(port, n, req):
    """N requests one after the other over one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:60]!r}")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        await reader.readexactly(int(m.group(1)) if m else 0)
    writer.close()


async def requests(port, n, host, post, conns):
    """N requests in all, spread over `conns` connections that send at once."""
    req = request_bytes(port, host, post)
    shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    await asyncio.gather(*(one_conn(port, k, req) for k in shares))


def total_instructions(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


# Functions that only pass a clock read on: their callers are the ones asking.
CLOCK_GLUE = re.compile(
    r"Timespec>::now$|std::time::(Instant|SystemTime)>::(now|elapsed)$"
    r"|tokio::time::instant::Instant::(now|elapsed)$"
)


def calls_by_caller(path):
    """{callee: {caller: calls}} from a callgrind output file."""
    names, calls = {}, {}
    caller = callee = None

    def name(ref):
        m = re.match(r"\((\d+)\)(?: (.*))?", ref)
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), ref)

    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                caller = name(line[3:].strip())
            elif line.startswith("cfn="):
                callee = name(line[4:].strip())
            elif line.startswith("calls=") and callee is not None:
                by = calls.setdefault(callee, {})
                by[caller] = by.get(caller, 0) + int(line[6:].split()[0])
                callee = None
    return calls


def clock_reads(path):
    """{(function, through std or tokio): clock_gettime calls it asked for}."""
    calls = calls_by_caller(path)
    reads = {}

    def credit(fn, count, depth, through):
        if depth < 6 and CLOCK_GLUE.search(fn) and fn in calls:
            total = sum(calls[fn].values())
            for caller, n in calls[fn].items():
                credit(caller, count * n / total, depth + 1, True)
        else:
            reads[(fn, through)] = reads.get((fn, through), 0) + count

    for callee, by in calls.items():
        if re.match(r"(__)?clock_gettime\b", callee):
            for caller, n in by.items():
                credit(caller, n, 0, False)
    return reads


def print_clock_reads(a_path, b_path, n):
    a, b = clock_reads(a_path), clock_reads(b_path)
    rows = [((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b)]
    rows = sorted((r for r in rows if abs(r[0]) >= 0.005), reverse=True)
    precise = sum(r for r, (_, through) in rows if through)
    print(f"clock reads per request: {sum(r for r, _ in rows):.2f}, {precise:.2f} of them through"
          " std's or tokio's clock (precise), the rest direct (clock.rs: coarse)")
    for r, (f, through) in rows:
        print(f"  {r:6.2f}  {'precise' if through else 'direct '}  {f}")


def routes_config(path, port, bport, n, access_log, trusted):
    """A config with N routes by host name over one backend, for `fulcrum run`."""
    with open(path, "w") as f:
        f.write(f'listeners: ["127.0.0.1:{port}"]\n')
        f.write("admin: { enabled: false }\n")
        if trusted:
            f.write('trusted_proxies: ["127.0.0.1/32"]\n')
        f.write(f"access_log: {{ enabled: {'true' if access_log else 'false'}, path: /dev/null }}\n")
        f.write(f'pools:\n  - name: app\n    backends: ["127.0.0.1:{bport}"]\nroutes:\n')
        for i in range(1, n + 1):
            f.write(f"  - {{ host: site{i}.test, pool: app }}\n")


async def one_run(args, bport, n, out):
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if args.routes:
        config = out + ".yaml"
        routes_config(config, port, bport, args.routes, args.access_log, args.trusted)
        cmd += [args.binary, "run", "-c", config]
    else:
        cmd += [args.binary, "proxy", "--from", f"127.0.0.1:{port}"]
        cmd += ["--to", f"http://127.0.0.1:{bport}"]
        if args.access_log:
            cmd.append("--access-log")
    env = dict(os.environ, FULCRUM_WORKERS="1", RUST_LOG="warn")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_port(port, time.monotonic() + 120)
        host = f"site{args.routes}.test" if args.routes else None
        await requests(port, n, host, args.post, args.conns)
    finally:
        proc.send_signal(signal.SIGTERM)
        for _ in range(600):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError("fulcrum did not stop")
    return total_instructions(out)


async def main(args):
    backend = await asyncio.start_server(backend_conn, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]
    keep = args.keep or tempfile.mkdtemp(prefix="fulcrum-callgrind.")
    os.makedirs(keep, exist_ok=True)
    n = args.requests
    a = await one_run(args, bport, n, os.path.join(keep, f"callgrind.out.{n}"))
    b = await one_run(args, bport, 2 * n, os.path.join(keep, f"callgrind.out.{2 * n}"))
    backend.close()
    over = f" over {args.conns} connections" if args.conns > 1 else ""
    print(f"{n} requests{over}: {a} instructions; {2 * n} requests: {b}")
    print(f"per request: {(b - a) / n:.0f} instructions")
    if args.clock_reads:
        print_clock_reads(
            os.path.join(keep, f"callgrind.out.{n}"),
            os.path.join(keep, f"callgrind.out.{2 * n}"),
            n,
        )
    print(f"callgrind files: {keep}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default="target/profiling/fulcrum")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--access-log", action="store_true", help="run with --access-log (to /dev/null)")
    p.add_argument("--routes", type=int, default=0, help="N routes by host name, with fulcrum run")
    p.add_argument("--post", type=int, metavar="BYTES", help="POST a body of BYTES bytes instead of a GET")
    p.add_argument("--trusted", action="store_true", help="with --routes: the client is a trusted proxy")
    p.add_argument("--conns", type=int, default=1, help="N keep-alive client connections sending at once")
    p.add_argument("--keep", help="directory for the callgrind output files")
    p.add_argument("--clock-reads", action="store_true", help="count clock_gettime calls per request, by caller")
    args = p.parse_args()
    if args.conns < 1 or args.conns > args.requests:
        p.error("--conns must be between 1 and --requests")
    if args.trusted and not args.routes:
        p.error("--trusted needs --routes (a config file)")
    asyncio.run(main(args))
    sys.exit(0)
