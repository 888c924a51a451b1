#!/usr/bin/python3
"""Reads fedc checkpoints (safetensors) for the integration tests.

    checkpoint.py meta FILE KEY       prints the __metadata__ value of KEY
    checkpoint.py same-data FILE RAW  exits 0 when RAW contains exactly the
                                      tensor data of FILE, in file order

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


def main(argv):
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
