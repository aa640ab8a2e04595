#!/usr/bin/env python3
"""The ablation's tables from `ape eval` runs (validation scans, the report's first transfer
mode): Table 2 (MRE_c with its interval and axes, MRE_ep, IoU) and Table 3 (IoU per organ),
as Markdown, one column per run.

    python3 training/tools/ablation_table.py NAME=DIR/results.json ...
"""
import json
import sys


def main():
    runs = []
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        with open(path) as f:
            runs.append((name, json.load(f)["all"]))
    if not runs:
        sys.exit(__doc__)
    print("| model | MRE_c (95% CI) | R–L | A–P | S–I | MRE_ep | IoU | VR@99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, a in runs + [("body-box baseline", runs[0][1])]:
        m = a["baseline"] if name == "body-box baseline" else a["ape"]
        c, lo_hi = m["mre_c"], m.get("mre_c_interval")
        interval = f" ({lo_hi[0]:.1f}–{lo_hi[1]:.1f})" if lo_hi else ""
        axes = " | ".join(f"{v:.1f}" for v in c["per_axis"])
        print(f"| {name} | {c['mean']:.1f}{interval} | {axes} | {m['mre_ep']['mean']:.1f} "
              f"| {m['iou']:.3f} | {m['vr99']:.1f} |")
    print()
    organs = [o["organ"] for o in runs[0][1]["ape"]["organs"]]
    print("| organ | " + " | ".join(n for n, _ in runs) + " | body box |")
    print("| --- " * (len(runs) + 2) + "|")
    for organ in organs:
        cells = []
        for _, a in runs:
            o = next((o for o in a["ape"]["organs"] if o["organ"] == organ), None)
            cells.append(f"{o['iou']:.2f}" if o and o["iou"] is not None else "–")
        b = next(o for o in runs[0][1]["baseline"]["organs"] if o["organ"] == organ)
        print(f"| {organ} | " + " | ".join(cells) + f" | {b['iou']:.2f} |")


if __name__ == "__main__":
    main()
