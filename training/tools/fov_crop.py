#!/usr/bin/env python3
"""Copies of labelled scans cut to a tight field of view: along the scan's superior-inferior
array axis, only the slices that hold labelled organs, plus a margin. Landmark transfer between
such copies tells whether a model finds anatomy from the anatomy or from where the image ends
(a model that learned "the top of the image is the chest" fails on a scan that stops at the liver).

    python3 training/tools/fov_crop.py OUT_DIR [--margin MM] SCAN_LABEL.nii.gz ...

Each `NAME_label.nii.gz` and its `NAME.nii.gz` beside it are written to OUT_DIR under the same
names, cut alike, with the affine's origin moved so that every kept voxel keeps its world
position. Then: `ape eval --data OUT_DIR --scans ...`. Only the numpy standard stack is needed
(no nibabel): uncompressed-header NIfTI-1 in a .nii.gz, 3-D, with an sform.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}


def read(path):
    raw = bytearray(gzip.open(path).read())
    if struct.unpack("<i", raw[0:4])[0] != 348:
        sys.exit(f"{path}: not a little-endian NIfTI-1 file")
    dim = list(struct.unpack("<8h", raw[40:56]))
    if dim[0] != 3:
        sys.exit(f"{path}: {dim[0]}-D; only 3-D volumes are cut")
    code = struct.unpack("<h", raw[70:72])[0]
    if code not in DTYPES:
        sys.exit(f"{path}: data type {code} not handled")
    offset = int(struct.unpack("<f", raw[108:112])[0])
    sform_code = struct.unpack("<h", raw[254:256])[0]
    if sform_code <= 0:
        sys.exit(f"{path}: no sform; the cut needs the affine")
    shape = dim[1:4]
    data = np.frombuffer(bytes(raw[offset:]), dtype=DTYPES[code], count=int(np.prod(shape)))
    # NIfTI stores x fastest: as a numpy array the axes are (k, j, i).
    data = data.reshape(shape[::-1])
    srow = np.array(struct.unpack("<12f", raw[280:328]), dtype=np.float64).reshape(3, 4)
    return raw, offset, data, srow


def superior_axis(srow):
    """The array axis (0 = i, 1 = j, 2 = k) whose step moves most along world z (RAS S)."""
    return int(np.argmax(np.abs(srow[2, :3])))


def write(path, raw, offset, data, srow, axis, start, stop):
    raw = bytearray(raw)
    dim = list(struct.unpack("<8h", raw[40:56]))
    dim[1 + axis] = stop - start
    srow = srow.copy()
    srow[:, 3] += srow[:, axis] * start
    raw[40:56] = struct.pack("<8h", *dim)
    raw[280:328] = struct.pack("<12f", *srow.flatten())
    raw[268:280] = struct.pack("<3f", *srow[:, 3])  # qoffset, kept equal to the sform's origin
    index = [slice(None)] * 3
    index[2 - axis] = slice(start, stop)
    cut = np.ascontiguousarray(data[tuple(index)])
    with gzip.open(path, "wb") as f:
        f.write(bytes(raw[:offset]) + cut.tobytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--margin", type=float, default=10.0, help="mm kept beyond the organs")
    parser.add_argument("labels", nargs="+")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for label_path in args.labels:
        if not label_path.endswith("_label.nii.gz"):
            sys.exit(f"{label_path}: expected NAME_label.nii.gz")
        scan_path = label_path[: -len("_label.nii.gz")] + ".nii.gz"
        l_raw, l_off, labels, l_srow = read(label_path)
        s_raw, s_off, scan, s_srow = read(scan_path)
        if labels.shape != scan.shape or not np.allclose(l_srow, s_srow, atol=1e-3):
            sys.exit(f"{label_path}: not on {scan_path}'s grid")
        axis = superior_axis(s_srow)
        other = tuple(a for a in range(3) if a != 2 - axis)
        occupied = np.flatnonzero(labels.any(axis=other))
        if occupied.size == 0:
            sys.exit(f"{label_path}: no labelled voxel")
        step = float(np.linalg.norm(s_srow[:, axis]))
        pad = int(np.ceil(args.margin / step))
        start = max(0, int(occupied[0]) - pad)
        stop = min(labels.shape[2 - axis], int(occupied[-1]) + 1 + pad)
        name = os.path.basename(scan_path)
        write(os.path.join(args.out, name), s_raw, s_off, scan, s_srow, axis, start, stop)
        write(os.path.join(args.out, os.path.basename(label_path)), l_raw, l_off, labels, l_srow, axis, start, stop)
        total = labels.shape[2 - axis]
        print(f"{name}: slices {start}…{stop - 1} of {total} kept ({(stop - start) * step:.0f} of {total * step:.0f} mm)")


if __name__ == "__main__":
    main()
