#!/usr/bin/env python3
"""Paired comparison of two `ape eval` runs on the same scans: the difference of their MRE_c
(model B minus model A, organ centres, the report's first transfer mode) with a 95% bootstrap
interval over target scans, as `ape eval` draws its own intervals, but resampling the *paired*
differences, so that the scans' shared difficulty cancels.

    python3 training/tools/paired_eval.py A/results.json B/results.json [all|held_out]
    python3 training/tools/paired_eval.py A1/results.json,A2/results.json B1/results.json,B2/results.json

Lists of runs (comma-separated, as many in A as in B) are replicates: twin runs at other seeds,
or other copies of the same two runs. Each centre's difference is then the mean of its
B_i - A_i over the replicates, so that one run's own noise weighs less; each replicate's own
difference is printed too, since the interval is over target scans only, not over seeds.

`held_out`: the pairs within the scans the models were trained without (the report's held-out
section) instead of all pairs.

The landmarks are matched by position: `ape eval` lists them in a fixed order (every ordered
pair of scans, then the query scan's organs found on the target), and the script refuses two
files whose scans, organs or model-free baselines differ.
"""
import json
import random
import sys


def load(path, section):
    with open(path) as f:
        j = json.load(f)
    part = j[section]
    names = [s["name"] for s in j["scans"]]
    if section == "held_out":
        names = [n for n in names if n in part["scans"]]
    labels = {}
    for c in j["centres_in_ape_space"]:
        if c["scan"] in names:
            labels.setdefault(names.index(c["scan"]), []).append(c["label"])
    # The target scan of each centre error, in ape eval's order.
    targets = []
    for a in range(len(names)):
        for b in range(len(names)):
            if a == b:
                continue
            for label in labels.get(a, []):
                if label in labels.get(b, []):
                    targets.append(b)
    errors = part["ape"]["centre_errors"]
    baseline = part["baseline"]["centre_errors"]
    if len(targets) != len(errors):
        sys.exit(f"{path}: {len(errors)} centre errors, but the scans' organs give {len(targets)}")
    return names, targets, errors, baseline


def mean_errors(paths, section):
    """The runs' scans, targets and baseline (the same for all), and each centre's mean error."""
    runs = [load(p, section) for p in paths]
    names, targets, _, baseline = runs[0]
    for path, (n, t, _, b) in zip(paths, runs):
        if (n, t, b) != (names, targets, baseline):
            sys.exit(f"{path} is not of the same scans, organs and baseline as {paths[0]}")
    errors = [sum(r[2][i] for r in runs) / len(runs) for i in range(len(targets))]
    return names, targets, errors, baseline, [r[2] for r in runs]


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["all"], ["held_out"]):
        sys.exit(__doc__)
    section = sys.argv[3] if len(sys.argv) == 4 else "all"
    paths_a, paths_b = sys.argv[1].split(","), sys.argv[2].split(",")
    if len(paths_a) != len(paths_b):
        sys.exit(f"{len(paths_a)} runs in A, {len(paths_b)} in B: replicates come in pairs")
    na, ta, ea, ba, runs_a = mean_errors(paths_a, section)
    nb, tb, eb, bb, runs_b = mean_errors(paths_b, section)
    if (na, ta, ba) != (nb, tb, bb):
        sys.exit("the two runs are not of the same scans, organs and baseline")
    if len(paths_a) > 1:
        for i, (ra, rb) in enumerate(zip(runs_a, runs_b)):
            d = (sum(rb) - sum(ra)) / len(ra)
            print(f"replicate {i + 1}: B - A = {d:+.2f} mm ({paths_a[i]} -> {paths_b[i]})")
    per_scan = {}
    for t, x, y in zip(ta, ea, eb):
        s = per_scan.setdefault(t, [0.0, 0.0, 0])
        s[0] += x
        s[1] += y
        s[2] += 1
    scans = list(per_scan.values())
    rng = random.Random(12345)
    diffs = []
    for _ in range(4000):
        draw = [scans[rng.randrange(len(scans))] for _ in scans]
        n = sum(d[2] for d in draw)
        diffs.append((sum(d[1] for d in draw) - sum(d[0] for d in draw)) / n)
    diffs.sort()
    mean_a = sum(ea) / len(ea)
    mean_b = sum(eb) / len(eb)
    lo, hi = diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]
    better = sum(1 for x, y in zip(ea, eb) if y < x) / len(ea)
    print(f"A {mean_a:.2f} mm, B {mean_b:.2f} mm over {len(ea)} centres of {len(scans)} target scans")
    print(f"B - A = {mean_b - mean_a:+.2f} mm (95% paired bootstrap over targets {lo:+.2f} … {hi:+.2f}); B closer on {100 * better:.0f} % of centres")


if __name__ == "__main__":
    main()
