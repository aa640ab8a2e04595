#!/usr/bin/env python3
"""How well can an organ's centre be placed from the *true* centres of the other organs?

A reference for MRE_c that needs no model: for every ordered pair of scans (source, target) and
every organ o present in both, fit a map from the source's other organ centres to the target's
(leave organ o out), carry o's source centre through it and measure the distance to o's true
target centre. Three maps, each a least-squares fit per axis:

- translation: the mean offset of the other organs;
- scale: x' = a·x + b per axis (6 parameters);
- affine: x' = A·x + b (12 parameters; needs at least 5 other organs);
- local affine: the same, each organ weighted by a Gaussian of its distance to the query
  (σ = 100 mm), as the consensus transfer weighs its supports.

These use the target's labels, so they are no method; they say how much of an organ centre's
position the rest of the anatomy explains under a global map, which bounds what a better
embedding can win over one that places every other organ perfectly. The figures are per axis
(mean absolute error, as `ape eval` reports) and radial, over every ordered pair of scans, like
MRE_c.

    python3 training/tools/centre_floor.py APE_BINARY LABEL_MAP... [--json]

The organ centres come from `ape info LABEL_MAP` (centres of mass in RAS mm).
"""
import itertools
import json
import math
import re
import subprocess
import sys

CENTRE = re.compile(r"^\s+(\d+)\s+(\S+)\s+\d+ voxels\s+[\d.]+ ml\s+\(\s*([-\d.]+),\s*([-\d.]+),\s*([-\d.]+)\)")


def organ_centres(ape, path):
    out = subprocess.run([ape, "info", path], check=True, capture_output=True, text=True).stdout
    centres = {}
    for line in out.splitlines():
        m = CENTRE.match(line)
        if m:
            centres[m.group(2)] = tuple(float(m.group(i)) for i in (3, 4, 5))
    if not centres:
        sys.exit(f"{path}: `ape info` listed no organ centres (is it a label map?)")
    return centres


def solve(a, b, w):
    """Weighted least squares a·x ≈ b through the normal equations (Gaussian elimination)."""
    n = len(a[0])
    m = [
        [sum(wk * r[i] * r[j] for r, wk in zip(a, w)) for j in range(n)]
        + [sum(wk * r[i] * y for r, y, wk in zip(a, b, w))]
        for i in range(n)
    ]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-12:
            return None
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def predict(kind, src, dst, query):
    """`query` carried by the map of `kind` fitted from points `src` to points `dst`."""
    # "local affine": organs weighted by a Gaussian of their distance to the query (σ = 100 mm),
    # like the consensus transfer's supports within 100 mm.
    w = [math.exp(-0.5 * (math.dist(p, query) / 100.0) ** 2) if kind == "local affine" else 1.0 for p in src]
    out = []
    for axis in range(3):
        ys = [d[axis] for d in dst]
        if kind == "translation":
            out.append(query[axis] + sum(wk * (y - s[axis]) for y, s, wk in zip(ys, src, w)) / sum(w))
            continue
        if kind == "scale":
            rows, q = [[s[axis], 1.0] for s in src], [query[axis], 1.0]
        else:
            rows, q = [[s[0], s[1], s[2], 1.0] for s in src], [query[0], query[1], query[2], 1.0]
        coef = solve(rows, ys, w)
        if coef is None:
            return None
        out.append(sum(c * x for c, x in zip(coef, q)))
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    if len(args) < 3:
        sys.exit(__doc__)
    ape, paths = args[0], args[1:]
    scans = {p: organ_centres(ape, p) for p in paths}
    results = {}
    for kind in ("translation", "scale", "affine", "local affine"):
        errors = []
        for s, t in itertools.permutations(paths, 2):
            common = sorted(set(scans[s]) & set(scans[t]))
            for organ in common:
                others = [o for o in common if o != organ]
                if len(others) < (5 if "affine" in kind else 2):
                    continue
                p = predict(kind, [scans[s][o] for o in others], [scans[t][o] for o in others], scans[s][organ])
                if p is None:
                    continue
                errors.append([pi - ti for pi, ti in zip(p, scans[t][organ])])
        n = len(errors)
        results[kind] = {
            "mre_c": sum(math.dist(e, (0, 0, 0)) for e in errors) / n,
            "per_axis": [sum(abs(e[i]) for e in errors) / n for i in range(3)],
            "n": n,
        }
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))
        return
    print(f"{len(paths)} label maps, every ordered pair, each organ from the true centres of the others")
    print(f"{'map':<12} {'MRE_c':>6} {'R–L':>6} {'A–P':>6} {'S–I':>6} {'n':>6}")
    for kind, r in results.items():
        x, y, z = r["per_axis"]
        print(f"{kind:<12} {r['mre_c']:6.1f} {x:6.1f} {y:6.1f} {z:6.1f} {r['n']:6d}")


if __name__ == "__main__":
    main()
