"""Seed corpora for the fuzz targets: a small valid NIfTI-1 (plain and gzipped), made here, and,
when ../shared is present, the header of a real IRCAD DICOM slice (outside the repository: the
corpus folders are ignored by git)."""

import gzip
import pathlib
import struct

here = pathlib.Path(__file__).parent
nifti_dir = here / "corpus" / "nifti_read"
dicom_dir = here / "corpus" / "dicom_read"
nifti_dir.mkdir(parents=True, exist_ok=True)
dicom_dir.mkdir(parents=True, exist_ok=True)

# NIfTI-1: 6 x 5 x 4 int16, 1 x 1.5 x 2 mm, sform = diag(-1, -1.5, 2), one scaling.
h = bytearray(348)
struct.pack_into("<i", h, 0, 348)
struct.pack_into("<8h", h, 40, 3, 6, 5, 4, 1, 1, 1, 1)
struct.pack_into("<hh", h, 70, 4, 16)  # datatype int16, bitpix
struct.pack_into("<8f", h, 76, 1.0, 1.0, 1.5, 2.0, 1, 1, 1, 1)
struct.pack_into("<f", h, 108, 352.0)  # vox_offset
struct.pack_into("<ff", h, 112, 1.0, -1024.0)  # scl_slope, scl_inter
struct.pack_into("<hh", h, 252, 1, 1)  # qform_code, sform_code
struct.pack_into("<4f", h, 280, -1.0, 0, 0, 10.0)
struct.pack_into("<4f", h, 296, 0, -1.5, 0, 20.0)
struct.pack_into("<4f", h, 312, 0, 0, 2.0, -30.0)
h[344:348] = b"n+1\0"
voxels = struct.pack("<120h", *[(i * 37) % 2000 for i in range(120)])
nifti = bytes(h) + b"\0\0\0\0" + voxels
(nifti_dir / "small.nii").write_bytes(nifti)
(nifti_dir / "small.nii.gz").write_bytes(gzip.compress(nifti))

slice_file = here.parent.parent / "shared" / "data" / "ircad_17" / "dicom" / "image_0"
if slice_file.is_file():
    data = slice_file.read_bytes()[132:]  # the target adds the preamble and marker
    (dicom_dir / "ircad_header").write_bytes(data[:6000])
    print("seeded", nifti_dir, "and", dicom_dir)
else:
    print("seeded", nifti_dir, "(no ../shared: the DICOM corpus starts empty)")
