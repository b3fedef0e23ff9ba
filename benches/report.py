#!/usr/bin/env python3
"""Prints flowstate against its baseline from criterion's saved estimates (target/criterion).

Usage: python3 benches/report.py [group] [baseline]   (default group: heap_state)

Each benchmark `group/<workload>/<variant>` is paired with `group/<workload>/<baseline>`
measured in the same run; the ratio is variant time / baseline time (lower is better).
The baseline is `hashbrown` by default and `heap` for the LSM groups (`lsm_*`).
"""
import json, os, sys

group = sys.argv[1] if len(sys.argv) > 1 else "heap_state"
baseline = sys.argv[2] if len(sys.argv) > 2 else ("heap" if group.startswith("lsm_") else "hashbrown")
root = os.path.join("target", "criterion", group)

def mean_ns(path):
    with open(os.path.join(path, "new", "estimates.json")) as f:
        return json.load(f)["mean"]["point_estimate"]

# criterion stores "group/workload/variant" as the directory "workload_variant"; workload names
# have no underscore, variant names may ("lsm_tables").
results = {}
for entry in sorted(os.listdir(root)):
    path = os.path.join(root, entry)
    if "_" not in entry or not os.path.isfile(os.path.join(path, "new", "estimates.json")):
        continue
    workload, variant = entry.split("_", 1)
    results.setdefault(workload, {})[variant] = mean_ns(path)

variants = sorted({v for r in results.values() for v in r if v != baseline})
for variant in variants:
    print(f"| workload | {variant} ns/op | {baseline} ns/op | {variant} ops/s | ratio (time) |")
    print("|---|---:|---:|---:|---:|")
    for workload, r in results.items():
        if variant in r and baseline in r:
            a, b = r[variant], r[baseline]
            print(f"| {workload} | {a:.1f} | {b:.1f} | {1e9 / a / 1e6:.2f} M | {a / b:.2f}x |")
    print()
