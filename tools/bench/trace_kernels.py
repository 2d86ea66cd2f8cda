#!/usr/bin/env python3
"""GPU time of a profiled step by the op that launched it: reads a Kineto trace that `kiln bench
model --profile DIR` wrote (DIR/N-VALUE.json) and prints, for the kernels that took the most time,
the launching CPU op with its input shapes (the profiler records them); then the same time by
range: the nearest enclosing kiln op ("kiln::OP [BACKEND]"), autograd node ("autograd::engine::
evaluate_function: ...") or other top-level CPU range of each launch.

    tools/bench/trace_kernels.py TRACE.json [--rows 25] [--match REGEX]
"""
import argparse
import bisect
import collections
import json
import re


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--match", default="", help="only kernels whose name matches this regex")
    args = parser.parse_args()
    with open(args.trace) as f:
        events = json.load(f)["traceEvents"]

    # The innermost CPU op of each launch: Kineto gives the kernel the External id of the op
    # that was running when it was launched (a record_function range, such as kiln's op
    # annotations, where no ATen op encloses the launch).
    ops = {}
    cpu = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation")]
    for e in cpu:
        if "External id" in e.get("args", {}):
            ops.setdefault(e["args"]["External id"], e)
    # Parents by time containment on each CPU thread (events in start order, the longer first at
    # equal starts, so that an enclosing op precedes what it encloses).
    parent = {}
    ordered = collections.defaultdict(list)
    for e in sorted(cpu, key=lambda e: (e.get("tid"), e["ts"], -e.get("dur", 0))):
        stack = ordered[e.get("tid")]
        up = stack[-1] if stack else None
        while up is not None and up["ts"] + up.get("dur", 0) <= e["ts"]:
            up = parent[id(up)]
        parent[id(e)] = up
        stack.append(e)
    starts = {tid: [e["ts"] for e in events_on] for tid, events_on in ordered.items()}

    # Kernels without an External id (launched through another CUDA runtime than torch's, such
    # as the cuda backend's static one): the innermost CPU op that encloses their launch call
    # (the runtime or driver event of the same correlation id) on the launching thread: the last
    # op to start before the call, or the nearest of its parents still running.
    launches = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }

    def enclosing(launch):
        tid = launch.get("tid")
        i = bisect.bisect_right(starts.get(tid, []), launch["ts"]) - 1
        op = ordered[tid][i] if i >= 0 else None
        while op is not None and op["ts"] + op.get("dur", 0) < launch["ts"]:
            op = parent[id(op)]
        return op

    def op_of(kernel):
        op = ops.get(kernel.get("args", {}).get("External id"))
        if op is None:
            launch = launches.get(kernel.get("args", {}).get("correlation"))
            op = enclosing(launch) if launch is not None else None
        return op

    def range_of(op):
        """The nearest kiln op or autograd node enclosing `op`, else its outermost range."""
        outer = op
        while op is not None:
            name = op["name"]
            if name.startswith("kiln::") or name.startswith("autograd::engine::evaluate_function"):
                return name.replace("autograd::engine::evaluate_function: ", "backward: ")
            outer = op
            op = parent.get(id(op))
        return outer["name"] if outer is not None else "?"

    by_range = collections.defaultdict(lambda: [0.0, 0])
    total = 0.0
    by_launch = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") != "kernel":
            continue
        total += e["dur"]
        if args.match and not re.search(args.match, e["name"]):
            continue
        op = op_of(e)
        slot = by_range[range_of(op)[:110] if op is not None else "?"]
        slot[0] += e["dur"]
        slot[1] += 1
        where = "?"
        if op is not None:
            dims = op["args"].get("Input Dims", [])
            where = f'{op["name"]} {[d for d in dims if d]}'
        slot = by_launch[(e["name"][:70], where[:150])]
        slot[0] += e["dur"]
        slot[1] += 1
    print(f"GPU kernel time {total / 1e3:.1f} ms")
    print(f"{'ms':>9} {'calls':>6}  kernel | launched by (input shapes)")
    for (kernel, where), (us, calls) in sorted(by_launch.items(), key=lambda kv: -kv[1][0])[
        : args.rows
    ]:
        print(f"{us / 1e3:9.2f} {calls:6d}  {kernel} | {where}")
    print(f"\n{'ms':>9} {'kernels':>7}  by range (kiln op, autograd node or outermost range)")
    for name, (us, calls) in sorted(by_range.items(), key=lambda kv: -kv[1][0])[: args.rows]:
        print(f"{us / 1e3:9.2f} {calls:7d}  {name}")


if __name__ == "__main__":
    main()
