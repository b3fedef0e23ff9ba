#!/usr/bin/env python3
"""Prints flowstate against its baseline from criterion's saved estimates (target/criterion).

Usage: python3 benches/report.py [group]   (default group: heap_state)
Each benchmark `group/<workload>/flowstate` is paired with `group/<workload>/hashbrown`
measured in the same run; the ratio is flowstate time / baseline time (lower is better).
"""
import json, os, sys

group = sys.argv[1] if len(sys.argv) > 1 else "heap_state"
root = os.path.join("target", "criterion", group)

def mean_ns(path):
    with open(os.path.join(path, "new", "estimates.json")) as f:
        return json.load(f)["mean"]["point_estimate"]

rows = []
# criterion stores "group/workload/flowstate" as the directory "workload_flowstate".
for entry in sorted(os.listdir(root)):
    if not entry.endswith("_flowstate"):
        continue
    workload = entry[: -len("_flowstate")]
    ours = os.path.join(root, entry)
    base = os.path.join(root, workload + "_hashbrown")
    if os.path.isdir(base):
        a, b = mean_ns(ours), mean_ns(base)
        rows.append((workload, a, b, a / b))
print(f"| workload | flowstate ns/op | hashbrown ns/op | flowstate ops/s | ratio (time) |")
print(f"|---|---:|---:|---:|---:|")
for w, a, b, r in rows:
    print(f"| {w} | {a:.1f} | {b:.1f} | {1e9 / a / 1e6:.2f} M | {r:.2f}x |")
