#!/usr/bin/python3
"""An external trainer for fedc-client ("trainer = exec") in PyTorch.

fedc runs this script in its work folder after writing model.safetensors
(the global model) and task.json (the spec and the training settings). It
trains on the client's data file named in the task, then writes
update.safetensors (the same tensor names and shapes) and metrics.json.

Usage, as the client's trainer command:
    /usr/bin/python3 /path/to/examples/pytorch/train.py

The task file is $FEDC_TASK, or the first argument, or ./task.json.
The data file is a fedc client data file: safetensors with "features"
(F32, or U8 scaled by 1/255) and "labels" (I32 or U8).
"""

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedc_torch  # noqa: E402


def load_data(path):
    tensors, _ = fedc_torch.read_safetensors(path)
    features = tensors["features"]
    if features.dtype == np.uint8:
        features = features.astype(np.float32) / 255.0
    x = torch.from_numpy(features.astype(np.float32).reshape(len(features), -1))
    y = torch.from_numpy(tensors["labels"].astype(np.int64))
    return x, y


def make_optimizer(params, task):
    lr = task["learning_rate"]
    if task["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=task["momentum"],
                               nesterov=task["nesterov"],
                               weight_decay=task["weight_decay"])
    cls = torch.optim.Adam if task["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(task["beta1"], task["beta2"]),
               eps=task["eps"], weight_decay=task["weight_decay"])


def learning_rate(task, step, total):
    """Return the learning rate fedc_train_config's schedule gives step."""
    lr = task["learning_rate"]
    if task["lr_schedule"] == "step":
        return lr * task["lr_gamma"] ** (step // task["lr_step_size"])
    if task["lr_schedule"] == "cosine":
        progress = min(step / total, 1.0) if total else 1.0
        return task["lr_min"] + 0.5 * (lr - task["lr_min"]) * (
            1 + math.cos(math.pi * progress))
    return lr


def train(model, x, y, task):
    """Mini-batch training as task describes; returns the metrics."""
    batch = task["batch_size"]
    per_epoch = math.ceil(len(x) / batch)
    total = per_epoch * task["local_epochs"]
    if task["max_steps"]:
        total = min(total, task["max_steps"])
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    optimizer = make_optimizer(params, task)
    generator = torch.Generator().manual_seed(task["seed"])
    mu = task["proximal_mu"]
    steps = examples = 0

    model.train()
    for _ in range(task["local_epochs"]):
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            if steps >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(task, steps, total)

            optimizer.zero_grad()
            out = model(x[idx])
            loss = model.loss(out, y[idx])
            objective = loss
            if mu:
                objective = loss + mu / 2 * sum(
                    ((p - s) ** 2).sum() for p, s in zip(params, start))
            objective.backward()
            if task["clip_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(params, task["clip_norm"])
            optimizer.step()

            steps += 1
            examples += len(idx)
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (model.predict(out) == y[idx]).sum().item()
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
            "examples": examples, "steps": steps}


def main():
    task_path = os.environ.get("FEDC_TASK") or (
        sys.argv[1] if len(sys.argv) > 1 else "task.json")
    folder = os.path.dirname(os.path.abspath(task_path))
    with open(task_path) as f:
        task = json.load(f)
    torch.manual_seed(task["seed"])
    global_tensors, _ = fedc_torch.read_safetensors(
        os.path.join(folder, task["model"]))
    model = fedc_torch.build_model(task["spec_text"])
    fedc_torch.load_params(model, global_tensors)
    x, y = load_data(task["data"])
    metrics = train(model, x, y, task)

    # Send back exactly the tensors fedc sent, trained.
    state = model.state_dict()
    update = {name: state[name].detach().numpy().astype(value.dtype)
              for name, value in global_tensors.items()}
    fedc_torch.write_safetensors(os.path.join(folder, task["update"]), update)
    with open(os.path.join(folder, task["metrics"]), "w") as f:
        json.dump(metrics, f)
    print("trained %d steps on %d examples, loss %.4f" %
          (metrics["steps"], metrics["examples"], metrics["loss"]))


if __name__ == "__main__":
    main()
