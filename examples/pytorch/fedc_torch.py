"""PyTorch equivalents of fedc model specs, and safetensors files without
the safetensors package.

build_model(spec_text) returns a torch module whose state_dict names,
shapes and computations match the fedc model built from the same layer
list, so tensors move between the two unchanged. It takes only the
layer-list form of a spec. fedc expands a built-in name such as "cnn" into
that form (fedc_spec_expand, or the "spec_text" field of an
external-trainer task). common/nn/spec.h documents the grammar.
"""

import json
import math
import struct

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


# --- safetensors ------------------------------------------------------------

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32,
           "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    """Return ({name: numpy array}, metadata dict) from a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start:base + end],
                              dtype=_DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Write {name: numpy array or tensor} to path in insertion order."""
    header = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        array = np.ascontiguousarray(value)
        dtype = next(k for k, v in _DTYPES.items() if array.dtype == v)
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


# --- Modules ----------------------------------------------------------------

class Sequence(nn.Module):
    """Children run in registration order; names are fedc's layer names."""

    def forward(self, x):
        for child in self.children():
            x = child(x)
        return x


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.body(x) + skip


class FloatIdsEmbedding(nn.Embedding):
    """nn.Embedding over token ids stored as floats, as fedc rows are."""

    def forward(self, x):
        return super().forward(x.long())


class FloatIdsEmbeddingBag(nn.EmbeddingBag):
    def forward(self, x):
        return super().forward(x.long())


class FedcModel(nn.Module):
    """A fedc spec as a module taking flat rows [batch, features]."""

    def __init__(self, input_shape, body, loss):
        super().__init__()
        self.input_shape = list(input_shape)
        self.loss_name = loss
        for name, child in body.named_children():
            self.add_module(name, child)

    def forward(self, x):
        x = x.reshape([x.shape[0]] + self.input_shape)
        for child in self.children():
            x = child(x)
        return x

    def loss(self, output, labels):
        """Compute the spec's loss with mean reduction, as fedc does."""
        if self.loss_name == "ce":
            return F.cross_entropy(output, labels.long())
        if output.shape[1] == 1:
            target = labels.float().reshape(-1, 1)
        else:
            target = F.one_hot(labels.long(), output.shape[1]).float()
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(output, target)
        return F.mse_loss(output, target)

    def predict(self, output):
        if output.shape[1] > 1:
            return output.argmax(1)
        if self.loss_name == "bce":
            return (output[:, 0] > 0).long()
        return torch.round(output[:, 0]).long()


# --- Spec parsing -----------------------------------------------------------

def _tokens(text):
    out = []
    word = ""
    for c in text:
        if c in "{};\n" or c.isspace():
            if word:
                out.append(word)
                word = ""
            if c in "{};\n":
                out.append(";" if c == "\n" else c)
        else:
            word += c
    if word:
        out.append(word)
    return out


def _read_statement(tokens, pos):
    kind = tokens[pos]
    pos += 1
    args, options = [], {}
    while pos < len(tokens) and tokens[pos] not in ("{", "}", ";"):
        if "=" in tokens[pos]:
            key, value = tokens[pos].split("=", 1)
            options[key] = value
        else:
            args.append(tokens[pos])
        pos += 1
    return kind, args, options, pos


def _pair(text):
    parts = [int(p) for p in text.split("x")]
    return (parts[0], parts[-1])


def _conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _layer(kind, args, options, shape):
    """Return (module, output shape) for one fedc layer statement."""
    if kind == "dense":
        bias = options.get("bias", "1") == "1"
        return (nn.Linear(shape[-1], int(args[0]), bias=bias),
                shape[:-1] + [int(args[0])])

    if kind == "conv":
        out, k = int(args[0]), int(args[1])
        stride, pad = int(options.get("stride", 1)), int(options.get("pad", 0))
        module = nn.Conv2d(shape[0], out, k, stride, pad,
                           bias=options.get("bias", "1") == "1")
        return module, [out, _conv_out(shape[1], k, stride, pad),
                        _conv_out(shape[2], k, stride, pad)]

    if kind in ("maxpool", "avgpool"):
        k = _pair(args[0])
        stride = _pair(options["stride"]) if "stride" in options else k
        pad = int(options.get("pad", 0))
        cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
        return cls(k, stride, pad), [
            shape[0], _conv_out(shape[1], k[0], stride[0], pad),
            _conv_out(shape[2], k[1], stride[1], pad)]

    if kind == "batchnorm":
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return cls(shape[0], eps=float(options.get("eps", 1e-5)),
                   momentum=float(options.get("momentum", 0.1))), shape

    if kind == "layernorm":
        dims = int(options.get("dims", 1))
        return nn.LayerNorm(shape[-dims:],
                            eps=float(options.get("eps", 1e-5))), shape

    if kind == "dropout":
        return nn.Dropout(float(args[0])), shape

    if kind == "flatten":
        return nn.Flatten(), [math.prod(shape)]

    if kind in ("embedding", "embeddingbag"):
        vocab, dim = int(args[0]), int(args[1])
        pad = int(options["padding"]) if "padding" in options else None
        if kind == "embedding":
            return FloatIdsEmbedding(vocab, dim, padding_idx=pad), shape + [dim]
        return FloatIdsEmbeddingBag(vocab, dim, mode="mean",
                                    padding_idx=pad), [dim]

    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
                   "tanh": nn.Tanh}

    if kind in activations:
        return activations[kind](), shape

    if kind == "leaky_relu":
        return nn.LeakyReLU(float(options.get("slope", 0.01))), shape
    raise ValueError("unknown layer %r" % kind)


def _block(tokens, pos, shape):
    """Parse statements up to "}" or the end; return (Sequence, shape, pos,
    loss or None)."""
    seq = Sequence()
    index = 0
    loss = None
    while pos < len(tokens) and tokens[pos] != "}":
        if tokens[pos] == ";":
            pos += 1
            continue
        kind, args, options, pos = _read_statement(tokens, pos)
        if kind == "loss":
            loss = args[0]
            continue
        name = options.pop("name", str(index))
        index += 1
        if kind == "residual":
            body, out_shape, pos, _ = _block(tokens, pos + 1, shape)
            pos += 1
            shortcut = None
            if pos < len(tokens) and tokens[pos] == "shortcut":
                shortcut, _, pos, _ = _block(tokens, pos + 2, shape)
                pos += 1
            seq.add_module(name, Residual(body, shortcut))
            shape = out_shape
            continue
        module, shape = _layer(kind, args, options, shape)
        seq.add_module(name, module)
    return seq, shape, pos, loss


def build_model(spec_text):
    """Build the FedcModel for a layer-list spec."""
    tokens = _tokens(spec_text)
    while tokens and tokens[0] == ";":
        tokens.pop(0)
    if not tokens or tokens[0] != "input":
        raise ValueError("spec must start with \"input DIMS\"")
    kind, args, _, pos = _read_statement(tokens, 0)
    shape = [int(d) for d in args[0].split("x")]
    body, _, _, loss = _block(tokens, pos, list(shape))
    return FedcModel(shape, body, loss or "ce")


def load_params(model, tensors):
    """Copy fedc tensors into model by name. Returns the names of
    model state entries that tensors did not contain."""
    missing = []
    state = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name in tensors:
                value.copy_(torch.from_numpy(np.asarray(tensors[name])))
            else:
                missing.append(name)
    return missing
