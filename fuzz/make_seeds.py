#!/usr/bin/env python3
"""Writes the seed corpus of one fuzz target (all but fuzz_image, whose seeds are encoded by
fuzz_image_seeds) from the repository's test fixtures and a few hand-made files.

Usage: make_seeds.py REPO_ROOT OUT_DIR TARGET

Standard library only. Seeds are small on purpose: libFuzzer runs faster on small inputs and
mutates towards larger ones itself.
"""
import io
import json
import os
import pickle
import pickletools
import random
import struct
import sys
import zipfile
from collections import OrderedDict


def write(out_dir, name, data):
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, align=8):
    """A safetensors file: {name: (dtype, shape, bytes)} laid out in order, with the header
    padded with spaces to `align` bytes as the official writer does."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % align)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds(root, out_dir):
    f32 = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, -0.25, 1e-3)
    write(out_dir, "f32.safetensors",
          safetensors({"w": ("F32", [2, 3], f32)}, {"format": "pt"}))
    write(out_dir, "dtypes.safetensors", safetensors({
        "module.a": ("F16", [2], struct.pack("<2H", 0x3C00, 0xC000)),
        "_orig_mod.b": ("BF16", [2], struct.pack("<2H", 0x3F80, 0xBF80)),
        "c": ("F64", [1], struct.pack("<d", 1.5)),
        "d": ("I64", [], struct.pack("<q", -7)),
        "e": ("I32", [2], struct.pack("<2i", 1, -1)),
        "f": ("I16", [1], struct.pack("<h", 3)),
        "g": ("I8", [2], struct.pack("<2b", -1, 1)),
        "h": ("U8", [3], bytes([0, 128, 255])),
        "i": ("BOOL", [2], bytes([0, 1])),
        "empty": ("F32", [0, 4], b""),
    }))
    write(out_dir, "unaligned.safetensors",
          safetensors({"x": ("F16", [3], struct.pack("<3H", 1, 2, 3)),
                       "y": ("F32", [1, 1], struct.pack("<f", 4.0))}, align=1))
    # Offsets in the header out of file order, as some writers produce.
    header = json.dumps({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                         "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    write(out_dir, "reordered.safetensors",
          struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0))
    write(out_dir, "no-tensors.safetensors", safetensors({}, {"k": "v"}))


def pth_seeds(root, out_dir):
    ckpt_dir = os.path.join(root, "tests", "golden", "checkpoints")
    names = sorted(n for n in os.listdir(ckpt_dir) if n.endswith(".pth"))
    for name in names:
        with open(os.path.join(ckpt_dir, name), "rb") as f:
            write(out_dir, name, f.read())
    # Re-zipped variants of each zip checkpoint: deflated entries, and another top-level folder
    # name (torch.save names it after the file).
    for name in names:
        path = os.path.join(ckpt_dir, name)
        if not zipfile.is_zipfile(path):
            continue
        with zipfile.ZipFile(path) as src:
            entries = [(i.filename, src.read(i)) for i in src.infolist()]
        for variant, method, rename in (("deflated", zipfile.ZIP_DEFLATED, None),
                                        ("renamed", zipfile.ZIP_STORED, "other")):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", method) as dst:
                for entry, data in entries:
                    if rename:
                        entry = rename + entry[entry.index("/"):]
                    dst.writestr(entry, data)
            write(out_dir, f"{name[:-4]}.{variant}.pth", buf.getvalue())


def split_pickles(data):
    """The consecutive pickles at the start of a legacy .pth (magic number, protocol, system
    info, the object, the storage keys), found by walking the opcodes up to each STOP; the
    storages' raw bytes follow the last one."""
    pickles, pos = [], 0
    while pos < len(data):
        try:
            end = None
            for op, _, at in pickletools.genops(io.BytesIO(data[pos:])):
                if op.name == "STOP":
                    end = pos + at + 1
                    break
        except ValueError:
            break
        if end is None:
            break
        pickles.append(data[pos:end])
        pos = end
    return pickles


def pickle_seeds(root, out_dir):
    ckpt_dir = os.path.join(root, "tests", "golden", "checkpoints")
    for name in sorted(os.listdir(ckpt_dir)):
        path = os.path.join(ckpt_dir, name)
        if not name.endswith(".pth"):
            continue
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for entry in z.namelist():
                    if entry.endswith("/data.pkl"):
                        write(out_dir, name[:-4] + ".data.pkl", z.read(entry))
        else:
            with open(path, "rb") as f:
                for i, p in enumerate(split_pickles(f.read())):
                    write(out_dir, f"{name[:-4]}.{i}.pkl", p)
    # Plain data in every protocol, so the text opcodes of protocols 0 and 1 are seeded too.
    value = OrderedDict([
        ("ints", [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63, -2**70]),
        ("floats", (0.5, -1e300, float("inf"))),
        ("tuples", [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)]),
        ("strings", ["", "a", "é", "x" * 300]),
        ("bytes", [b"", b"\x00\xff", b"y" * 300]),
        ("other", {"none": None, "true": True, "false": False, "nested": {"k": [[{}]]}}),
    ])
    shared = [1, 2]
    value["shared"] = [shared, shared]  # memo PUT / GET
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        write(out_dir, f"data.p{protocol}.pkl", pickle.dumps(value, protocol=protocol))


def metrics_seeds(root, out_dir):
    """fuzz_metrics inputs (layout in fuzz_metrics.cpp): random pixels, a disc, an empty and a
    full GT, a 1-pixel image, and a prediction of another size."""
    rng = random.Random(0)

    def noise(n):
        return bytes(rng.randrange(256) for _ in range(n))

    def disc(w, h):
        return bytes(255 if (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2 else 0
                     for y in range(h) for x in range(w))

    write(out_dir, "noise-16x16", bytes([15, 15, 0]) + noise(512))
    write(out_dir, "disc-32x24", bytes([31, 23, 0]) + noise(32 * 24) + disc(32, 24))
    write(out_dir, "disc-binary-20x20", bytes([19, 19, 6]) + disc(20, 20) + disc(20, 20))
    write(out_dir, "empty-gt-8x8", bytes([7, 7, 0]) + noise(64) + bytes(64))
    write(out_dir, "full-gt-8x8", bytes([7, 7, 0]) + noise(64) + bytes([255]) * 64)
    write(out_dir, "one-pixel", bytes([0, 0, 0, 200, 255]))
    write(out_dir, "resize-12x9-to-40x30", bytes([39, 29, 1, 11, 8]) + noise(108) + disc(40, 30))
    write(out_dir, "constant-pred", bytes([9, 9, 0]) + bytes([0]) * 100 + disc(10, 10))


SEEDS = {
    "fuzz_safetensors": safetensors_seeds,
    "fuzz_pth": pth_seeds,
    "fuzz_pickle": pickle_seeds,
    "fuzz_metrics": metrics_seeds,
}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in SEEDS:
        sys.exit(f"usage: make_seeds.py REPO_ROOT OUT_DIR {{{'|'.join(SEEDS)}}}")
    os.makedirs(sys.argv[2], exist_ok=True)
    SEEDS[sys.argv[3]](sys.argv[1], sys.argv[2])
