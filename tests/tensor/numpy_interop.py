"""Reads and writes safetensors files with numpy alone, for the fedc tests.

  numpy_interop.py check PATH   exits 0 when PATH (written by fedc) holds
                                exactly the tensors and metadata below
  numpy_interop.py write PATH   writes them, the way another program might:
                                JSON keys out of data order, \\u escapes,
                                no padding

The expected values must match expected_list() in test_safetensors.c.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32,
          "I64": np.int64, "U8": np.uint8}

METADATA = {"num_classes": "10",
            "note": "quote \" backslash \\ newline \n e-acute \u00e9 "
                    "snowman \u2603 clef \U0001d11e"}


def expected():
    """Returns the tensors in data order, as (name, dtype name, array)."""
    return [
        ("weight", "F32",
         np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5)
         - np.float32(1)),
        ("bias", "F64", np.array([1e-300, -2.5, 3.0], dtype=np.float64)),
        ("ids", "I32",
         np.array([-2**31, -1, 0, 2**31 - 1], dtype=np.int32)),
        ("step", "I64", np.array(-(2**40) - 3, dtype=np.int64)),
        ("pixels", "U8",
         (np.arange(8, dtype=np.uint8) * 31).reshape(2, 2, 2)),
        ("empty", "F32", np.zeros((0, 4), dtype=np.float32)),
    ]


def fail(message):
    print("numpy_interop: " + message, file=sys.stderr)
    sys.exit(1)


def check(path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    if (8 + header_len) % 8 != 0:
        fail("data does not start at a multiple of 8 bytes")
    header = json.loads(raw[8:8 + header_len].decode("utf-8"))
    data = raw[8 + header_len:]

    if header.pop("__metadata__", None) != METADATA:
        fail("metadata differs")
    tensors = expected()
    if list(header) != [name for name, _, _ in tensors]:
        fail("tensor names or order differ: %s" % list(header))
    offset = 0
    for name, dtype, want in tensors:
        info = header[name]
        begin, end = info["data_offsets"]
        if info["dtype"] != dtype or info["shape"] != list(want.shape):
            fail("%s: dtype or shape differs: %s" % (name, info))
        if begin != offset:
            fail("%s: data does not follow the previous tensor" % name)
        got = np.frombuffer(data[begin:end], dtype=DTYPES[dtype])
        if not np.array_equal(got.reshape(info["shape"]), want):
            fail("%s: values differ: %s" % (name, got))
        offset = end
    if offset != len(data):
        fail("%d data bytes follow the last tensor" % (len(data) - offset))


def write(path):
    header = {}
    blobs = []
    offset = 0
    for name, dtype, array in expected():
        blob = np.ascontiguousarray(array).astype("<" + array.dtype.str[1:])
        blob = blob.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    # Reverse the key order so that the reader must sort by data offset.
    ordered = {"__metadata__": METADATA}
    for name in reversed(list(header)):
        ordered[name] = header[name]
    text = json.dumps(ordered, indent=1).encode("ascii")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "write"):
        fail("usage: numpy_interop.py check|write PATH")
    if sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        write(sys.argv[2])


if __name__ == "__main__":
    main()
