#!/usr/bin/python3
"""Reads fedc checkpoints (safetensors) for the integration tests.

    checkpoint.py meta FILE KEY       prints the __metadata__ value of KEY
    checkpoint.py same-data FILE RAW  exits 0 when RAW contains exactly the
                                      tensor data of FILE, in file order
    checkpoint.py max-abs FILE        prints the largest absolute value of
                                      the F32 tensors of FILE

A safetensors file is an 8-byte little-endian header length, a JSON header
and the tensor data; the parser is written out here so that the tests need
no package beyond the standard library.
"""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    return header, blob[8 + length:]


def tensor_data(header, data):
    tensors = [(v["data_offsets"], k) for k, v in header.items()
               if k != "__metadata__"]
    return b"".join(data[begin:end] for (begin, end), _ in sorted(tensors))


def max_abs(header, data):
    largest = 0.0
    for name, v in header.items():
        if name == "__metadata__" or v["dtype"] != "F32":
            continue
        begin, end = v["data_offsets"]
        for (x,) in struct.iter_unpack("<f", data[begin:end]):
            largest = max(largest, abs(x))
    return largest


def main(argv):
    if len(argv) == 3 and argv[1] == "max-abs":
        header, data = read(argv[2])
        print(max_abs(header, data))
        return 0
    if len(argv) != 4 or argv[1] not in ("meta", "same-data"):
        sys.exit(__doc__)
    header, data = read(argv[2])
    if argv[1] == "meta":
        print(header.get("__metadata__", {}).get(argv[3], ""))
        return 0
    with open(argv[3], "rb") as f:
        raw = f.read()
    expected = tensor_data(header, data)
    if raw != expected:
        print(f"checkpoint.py: {argv[3]} has {len(raw)} bytes that differ "
              f"from the {len(expected)} bytes of tensor data in {argv[2]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
