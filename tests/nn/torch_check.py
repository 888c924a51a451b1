"""Runs the PyTorch side of test_torch.c.

For every DIR/*.in.safetensors written by the C test, this script builds
the same model in PyTorch (examples/pytorch/fedc_torch.py), repeats the
computation the metadata "kind" names and writes DIR/*.torch.safetensors:

  layer  one forward and backward pass on "input" with "grad_output";
         writes "output", "grad_input", "grad.<param>" and, after the
         pass, "buffer.<name>" for running statistics;
  train  "steps" full-batch optimizer steps on "x" and "y" with the
         configured optimizer, schedule, clipping and proximal term;
         writes the final parameters.
"""

import glob
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "examples", "pytorch"))
import fedc_torch  # noqa: E402


def run_layer(model, tensors, meta):
    x = torch.from_numpy(tensors["input"]).requires_grad_(True)
    model.train(meta["train"] == "1")
    out = model(x)
    out.backward(torch.from_numpy(tensors["grad_output"]))
    result = {"output": out}
    if meta.get("ids") != "1":
        result["grad_input"] = x.grad
    for name, param in model.named_parameters():
        result["grad." + name] = param.grad
    for name, buf in model.named_buffers():
        if "running_" in name:
            result["buffer." + name] = buf
    return result


def make_optimizer(model, meta):
    lr = float(meta["lr"])
    wd = float(meta["weight_decay"])
    kind = meta["optimizer"]
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr,
                               momentum=float(meta["momentum"]),
                               nesterov=meta["nesterov"] == "1",
                               weight_decay=wd)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=lr,
               betas=(float(meta["beta1"]), float(meta["beta2"])),
               eps=float(meta["eps"]), weight_decay=wd)


def make_schedule(optimizer, meta, steps):
    kind = meta["schedule"]
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, int(meta["step_size"]), float(meta["gamma"]))
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, steps, float(meta["lr_min"]))
    return None


def run_train(model, tensors, meta):
    steps = int(meta["steps"])
    x = torch.from_numpy(tensors["x"])
    y = torch.from_numpy(tensors["y"])
    mu = float(meta["mu"])
    clip = float(meta["clip"])
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, meta)
    schedule = make_schedule(optimizer, meta, steps)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.loss(model(x), y)
        if mu != 0:
            loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in
                                       zip(model.parameters(), start))
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if schedule is not None:
            schedule.step()
    result = dict(model.named_parameters())
    result.update((name, buf) for name, buf in model.named_buffers()
                  if "running_" in name)
    return result


def main(folder):
    torch.set_num_threads(1)
    cases = sorted(glob.glob(os.path.join(folder, "*.in.safetensors")))
    for path in cases:
        tensors, meta = fedc_torch.read_safetensors(path)
        model = fedc_torch.build_model(meta["spec"])
        missing = fedc_torch.load_params(model, tensors)
        unexpected = [m for m in missing if not m.endswith("num_batches_tracked")]
        if unexpected:
            sys.exit("%s: no value for %s" % (path, ", ".join(unexpected)))
        run = run_layer if meta["kind"] == "layer" else run_train
        result = run(model, tensors, meta)
        out = path.replace(".in.safetensors", ".torch.safetensors")
        fedc_torch.write_safetensors(out, {k: v.detach().numpy()
                                           for k, v in result.items()})
    print("torch_check: %d cases" % len(cases))


if __name__ == "__main__":
    main(sys.argv[1])
