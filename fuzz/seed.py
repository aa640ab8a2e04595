"""Seed corpora for the fuzz targets (outside git: the corpus folders are ignored).

- nifti_read: a small valid NIfTI-1 (plain and gzipped), and the hostile-input classes the
  reader refuses or warns on (issue 15): a NaN scl_slope (no scaling), pixdim of 1e30 and
  1e-30 (refused), voxels of 0.01 mm and of 50 mm (possible, with a warning), float32
  label-like data (whole numbers, and one that is not), big-endian files (plain and gzipped),
  qform-only and pixdim-only files.
- dicom_read: when ../shared is present, the header of a real IRCAD DICOM slice.
- boxes_read: box files in each format: CSV as a spreadsheet saves it (byte-order mark, CRLF,
  quoted names, columns in another order, an empty row), ape's JSON (every origin), 3D Slicer
  markups in LPS and RAS, in mm and µm (both spellings), a rotated ROI, one without control
  points, and a non-ROI markup that is skipped.

The target decides how the bytes are used: boxes_read writes each input as .json, .csv and
.mrk.json alike, so every seed goes into one folder."""

import gzip
import json
import math
import pathlib
import struct

here = pathlib.Path(__file__).parent
nifti_dir = here / "corpus" / "nifti_read"
dicom_dir = here / "corpus" / "dicom_read"
boxes_dir = here / "corpus" / "boxes_read"
for d in (nifti_dir, dicom_dir, boxes_dir):
    d.mkdir(parents=True, exist_ok=True)


# --- NIfTI-1 -------------------------------------------------------------------------------
def nifti(
    *,
    endian="<",
    shape=(6, 5, 4),
    datatype=(4, 16),  # int16
    voxel_format="h",
    voxels=None,
    pixdim=(1.0, 1.5, 2.0),
    qfac=1.0,
    slope=1.0,
    inter=-1024.0,
    qform_code=1,
    sform_code=1,
    srows=((-1.0, 0, 0, 10.0), (0, -1.5, 0, 20.0), (0, 0, 2.0, -30.0)),
    quatern=(0.0, 0.0, 1.0),  # b, c, d: 180° about z (RAS → LPS-like axes)
    qoffset=(10.0, 20.0, -30.0),
):
    """A NIfTI-1 file: header, 4 bytes of empty extension flag, voxels."""
    e = endian
    h = bytearray(348)
    struct.pack_into(e + "i", h, 0, 348)
    struct.pack_into(e + "8h", h, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into(e + "hh", h, 70, *datatype)
    struct.pack_into(e + "8f", h, 76, qfac, *pixdim, 1, 1, 1, 1)
    struct.pack_into(e + "f", h, 108, 352.0)  # vox_offset
    struct.pack_into(e + "ff", h, 112, slope, inter)  # scl_slope, scl_inter
    struct.pack_into(e + "hh", h, 252, qform_code, sform_code)
    struct.pack_into(e + "3f", h, 256, *quatern)
    struct.pack_into(e + "3f", h, 268, *qoffset)
    for i, row in enumerate(srows):
        struct.pack_into(e + "4f", h, 280 + 16 * i, *row)
    h[344:348] = b"n+1\0"
    n = shape[0] * shape[1] * shape[2]
    if voxels is None:
        voxels = [(i * 37) % 2000 for i in range(n)]
    data = struct.pack(f"{e}{n}{voxel_format}", *voxels)
    return bytes(h) + b"\0\0\0\0" + data


def seed_nifti(name, data, gz=False):
    (nifti_dir / name).write_bytes(data)
    if gz:
        (nifti_dir / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))


# 6 x 5 x 4 int16, 1 x 1.5 x 2 mm, sform = diag(-1, -1.5, 2), one scaling (the original seed).
seed_nifti("small.nii", nifti(), gz=True)
# scl_slope NaN: "no scaling", as nibabel reads it.
seed_nifti("nan_slope.nii", nifti(slope=math.nan, inter=math.nan))
# Voxel sizes no scanner makes: refused by field (sform, and pixdim alone).
huge = 1e30
seed_nifti(
    "huge_pixdim_sform.nii",
    nifti(pixdim=(huge, huge, huge), srows=((huge, 0, 0, 0), (0, huge, 0, 0), (0, 0, huge, 0))),
)
seed_nifti("huge_pixdim.nii", nifti(pixdim=(1.0, huge, 2.0), qform_code=0, sform_code=0))
seed_nifti("tiny_pixdim.nii", nifti(pixdim=(1e-30, 1e-30, 1e-30), qform_code=0, sform_code=0))
# Possible but unusual for CT: a warning, not a refusal.
seed_nifti("fine_pixdim.nii", nifti(pixdim=(0.01, 0.01, 0.01), qform_code=0, sform_code=0))
seed_nifti("coarse_pixdim.nii", nifti(pixdim=(1.0, 1.0, 50.0), qform_code=0, sform_code=0))
# qform only: quaternion and qfac.
seed_nifti("qform_only.nii", nifti(sform_code=0, qfac=-1.0))
# float32 label-like data: whole numbers 0…3 (read as labels with a warning) and one 2.5
# (refused as labels, read as a volume).
labels = [float(i % 4) for i in range(120)]
seed_nifti(
    "float_labels.nii",
    nifti(datatype=(16, 32), voxel_format="f", voxels=labels, slope=0.0, inter=0.0),
    gz=True,
)
seed_nifti(
    "float_labels_fraction.nii",
    nifti(datatype=(16, 32), voxel_format="f", voxels=labels[:7] + [2.5] + labels[8:],
          slope=0.0, inter=0.0),
)
# Big-endian header and voxels.
seed_nifti("big_endian.nii", nifti(endian=">"), gz=True)
seed_nifti(
    "big_endian_float64.nii",
    nifti(endian=">", datatype=(64, 64), voxel_format="d", voxels=[float(i) for i in range(120)],
          slope=0.0, inter=0.0),
)

# --- DICOM ---------------------------------------------------------------------------------
slice_file = here.parent.parent / "shared" / "data" / "ircad_17" / "dicom" / "image_0"
if slice_file.is_file():
    data = slice_file.read_bytes()[132:]  # the target adds the preamble and marker
    (dicom_dir / "ircad_header").write_bytes(data[:6000])
    dicom_note = "and an IRCAD slice header in " + str(dicom_dir)
else:
    dicom_note = "(no ../shared: the DICOM corpus starts empty)"


# --- Box files -----------------------------------------------------------------------------
def seed_boxes(name, text):
    (boxes_dir / name).write_bytes(text.encode("utf-8") if isinstance(text, str) else text)


# CSV as a spreadsheet saves it: BOM, CRLF, quoted fields (a comma, a doubled quote, a line
# break, surrounding spaces), columns in another order, an empty row, a repeated box.
csv_rows = [
    "origin,scan,organ,x_min,y_min,z_min,x_max,y_max,z_max",
    'drawn,"scan, 1","liver ""left""",-120.5,-80,10,-20,40.25,160',
    'predicted,scan_2,"spleen\r\nlobe",1e-3,-1E2,0,5,0,3.5',
    ",,,,,,,,",
    'ACCEPTED, "  padded  " ,kidney,-1000000,-1,-1,1000000,1,1',
    "drawn,scan_2,kidney,0,0,0,0,0,0",
    "drawn,scan_2,kidney,1,2,3,4,5,6",
]
seed_boxes("spreadsheet.csv", "\ufeff" + "\r\n".join(csv_rows) + "\r\n")
# As ape writes it.
seed_boxes(
    "plain.csv",
    "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin\n"
    "s1,liver,-10,-20,-30,10,20,30,drawn\n"
    "s1,spleen,0.5,0.25,0.125,1.5,1.25,1.125,predicted\n",
)

box_json = {
    "boxes": [
        {"scan": "s1", "organ": "liver", "bbox": {"min": [-10.0, -20.0, -30.0],
                                                  "max": [10.0, 20.0, 30.0]},
         "origin": {"kind": "drawn"}},
        {"scan": "s1", "organ": "spleen", "bbox": {"min": [0, 0, 0], "max": [1e6, 1, 1]},
         "origin": {"kind": "predicted", "supports": 5, "alpha": 1.25}},
        {"scan": "s 2, \"q\"", "organ": "kidney\nright", "bbox": {"min": [-1e6, -1, -1],
                                                                 "max": [-1e6, 1, 1]},
         "origin": {"kind": "accepted"}},
    ]
}
seed_boxes("boxes.json", json.dumps(box_json, indent=2))
seed_boxes("boxes_bom.json", "\ufeff" + json.dumps(box_json))


def roi(name, center, size, *, system=None, units=None, orientation=None, label=None, scan="s1"):
    m = {"type": "ROI", "name": name, "roiType": "Box", "center": center, "size": size}
    if system is not None:
        m["coordinateSystem"] = system
    if units is not None:
        m["coordinateUnits"] = units
    if orientation is not None:
        m["orientation"] = orientation
    if label is not None:
        m["controlPoints"] = [{"id": "1", "label": label, "position": center,
                               "positionStatus": "defined"}]
    if scan is not None:
        m["description"] = scan
    return m


def markups(*ms):
    return json.dumps({
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/"
                   "Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": list(ms),
    }, indent=2)


identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
rotated_z = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
seed_boxes("slicer_lps.mrk.json", markups(
    roi("s1 liver", [10.0, -20.0, 30.0], [50.0, 60.0, 70.0], system="LPS", units="mm",
        orientation=identity, label="liver"),
))
seed_boxes("slicer_ras.mrk.json", markups(
    roi("R", [-10.0, 20.0, 30.0], [5.0, 6.0, 7.0], system="RAS", label="kidney"),
    # Slicer's own ROIs: no control points, the name is the organ.
    roi("spleen", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], system="ras", scan=None),
))
seed_boxes("slicer_um.mrk.json", markups(
    roi("um", [10000.0, -20000.0, 30000.0], [5000.0, 6000.0, 7000.0], units="um", label="liver"),
    roi("ucum", [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], units=["um", "UCUM", "micrometer"],
        label="spleen"),
))
seed_boxes("slicer_rotated.mrk.json", markups(
    roi("rotated", [0.0, 0.0, 0.0], [100.0, 50.0, 20.0], system="LPS", orientation=rotated_z,
        label="liver"),
    # A signed permutation: not rotated in the sense of the warning, exact.
    roi("flipped", [1.0, 1.0, 1.0], [2.0, 4.0, 6.0],
        orientation=[0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0], label="kidney"),
))
seed_boxes("slicer_mixed.mrk.json", markups(
    {"type": "Fiducial", "name": "F", "controlPoints": [{"position": [1, 2, 3]}]},
    roi("s1 liver", [0.0, 0.0, 0.0], [2e6, 2e6, 2e6], label="liver"),
))

print("seeded", nifti_dir, "and", boxes_dir, dicom_note)
