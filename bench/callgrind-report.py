#!/usr/bin/env python3
"""Per-request instruction counts by function and by part of the request path.

    bench/callgrind-report.py DIR [--top 25]

DIR holds the two files `bench/callgrind.py --keep DIR` wrote
(callgrind.out.N and callgrind.out.2N). Each function's count in the 2N run
minus its count in the N run, divided by N, is what one request costs in it:
start-up and shutdown cancel out. Prints the groups (exclusive counts, so they
add up to the total), then the top functions, exclusive and inclusive.
"""

import argparse
import collections
import os
import re
import subprocess

# First matching pattern wins; matched against `file:function`, where the file
# is the source the instructions come from (inlined code keeps its own file).
# This checkout's own sources, wherever it was cloned.
REPO_SRC = re.escape(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src") + "/")

GROUPS = [
    ("access log (line, time, channel)", r"proxy/access_log\.rs|serde_json|humantime|std/src/sync/mpmc|access_log::"),
    ("metrics (counters, histograms)", r"src/telemetry\.rs|telemetry::"),
    ("smuggling guard", r"proxy/guard\.rs|guard::Scanner"),
    ("header rules (hop-by-hop, forwarding, request ID)", r"proxy/headers\.rs|pipeline/request\.rs|pipeline/response\.rs"),
    ("routing", r"snapshot/router|pipeline/route\.rs"),
    ("rest of our code (accept, forward, pick, finish, bodies)", r"^" + REPO_SRC + r"|^src/|fulcrum/src/"),
    ("HTTP/1 parsing (httparse, both sides)", r"httparse"),
    ("hyper server side (role::Server, server::conn)", r"role::Server|hyper-[^/]*/src/server/"),
    ("hyper client side (role::Client, client::conn, dispatch channel)", r"role::Client|hyper-[^/]*/src/client/|/want-"),
    ("hyper shared (dispatch, conn state, buffers, body channel)", r"hyper-"),
    ("http crate (HeaderMap, HeaderName, Uri)", r"/http-\d"),
    ("allocation (mimalloc, alloc glue)", r"mimalloc|alloc/src/alloc\.rs|raw_vec|__rust_(alloc|dealloc|realloc)"),
    ("tokio (scheduler, I/O driver, timers, sync)", r"tokio"),
    ("memcpy / memmove / memset", r"mem(cpy|move|set)"),
    ("bytes", r"/bytes-"),
]


def annotate(path, inclusive):
    """{(file, function): instructions} from callgrind_annotate."""
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100",
         f"--inclusive={'yes' if inclusive else 'no'}", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs = collections.Counter()
    line_re = re.compile(r"^\s*([\d,]+)\s+\([\d. %]+\)\s+(.*)$")
    for line in out.splitlines():
        m = line_re.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"\s+\[[^\]]*\]$", "", m.group(2))
        file, sep, func = name.partition(":")
        if not sep or func.startswith(":"):
            file, func = "", name
        costs[(file, func)] += int(m.group(1).replace(",", ""))
    return costs


def by_function(costs):
    out = collections.Counter()
    for (_, func), cost in costs.items():
        out[func] += cost
    return out


def totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    files = sorted(
        (int(f.rsplit(".", 1)[1]), os.path.join(args.dir, f))
        for f in os.listdir(args.dir)
        if re.fullmatch(r"callgrind\.out\.\d+", f)
    )
    (n1, f1), (n2, f2) = files[0], files[-1]
    n = n2 - n1
    total = (totals(f2) - totals(f1)) / n
    excl = annotate(f2, False)
    excl.subtract(annotate(f1, False))
    incl = annotate(f2, True)
    incl.subtract(annotate(f1, True))

    groups = collections.Counter()
    for (file, func), cost in excl.items():
        for label, pattern in GROUPS:
            if re.search(pattern, f"{file}:{func}"):
                groups[label] += cost
                break
        else:
            groups["other (std, core, libc)"] += cost
    print(f"per request: {total:.0f} instructions ({n} requests)\n")
    print("| part | instructions per request | share |")
    print("| --- | ---: | ---: |")
    for label, cost in groups.most_common():
        if abs(cost / n) >= 1:
            print(f"| {label} | {cost / n:,.0f} | {100 * cost / n / total:.1f}% |")
    for title, costs in (("exclusive", by_function(excl)), ("inclusive", by_function(incl))):
        print(f"\ntop {args.top} functions, {title}, instructions per request:\n")
        for name, cost in costs.most_common(args.top):
            print(f"{cost / n:9,.0f}  {name[:160]}")


if __name__ == "__main__":
    main()
