"""The reference trainer: every method trained in PyTorch, beside ffl_tf, on the same images with the same settings.

benchmarks/reproduce.py runs it; it trains what benchmarks/torch_nets.py builds (the official code's
networks and initialisation) the way the official code trains them: SGD with momentum (Nesterov per method)
and PyTorch's weight_decay (the fusion module's own for FFL), the learning rate multiplied by the decay
factor at the decay epochs, the ramp-up w(e) of the fractional epoch, reflect-padding by 4 pixels, a random
32x32 crop and a random horizontal flip. The training stream is the one ffl_tf reads: a new permutation per
pass over the training images, cut into full batches, `steps = N // batch` of them per epoch. DML updates
its networks one after the other on each batch, as its paper's Algorithm 1 does (`dml_update=alternate`:
network k learns from the others' logits recomputed after their update), or all from one forward pass as
ffl_tf does (`joint`).

It runs by path (`python benchmarks/torch_reference.py ...`) in a process that holds PyTorch alone, and
needs only torch and numpy:

    python benchmarks/torch_reference.py train --settings=RUN/settings.json --data=DATA.npz --output_dir=RUN
    python benchmarks/torch_reference.py check --settings=S.json --reference=FFL_TF.npz

`train` writes RUN/history.jsonl (a line per epoch) and, at the end, RUN/results.json (atomically), printing
a line per epoch on standard error. `check` compares ffl_tf's freshly initialised weights with its own
(mean and standard deviation of every tensor, within sampling error) and then, from ffl_tf's weights, the
logits, the loss and the loss after one step; it prints its findings as one JSON line on standard output.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torch_nets  # benchmarks/torch_nets.py: this file runs by path, so its directory is on sys.path
from torch import nn

# |z| above which two samples' means or standard deviations are taken to differ (two-sided p ~ 6e-5 each).
Z_BOUND = 4.0
MIN_JUDGED_SIZE = 100
# Kurtosis of each kind's reference distribution (normal 3, uniform 1.8): the spread of a sample's std.
_KURTOSIS = {"conv": 3.0, "depthwise": 3.0, "linear_kernel": 1.8, "linear_bias": 1.8}


# ---------------------------------------------------------------------------------------------------------
# The network and its optimisers
# ---------------------------------------------------------------------------------------------------------


def build(settings: dict, seed: int) -> torch_nets.MultiBranchNet:
    """The seeded network the settings describe (ffl_tf's `model` section and method)."""
    torch.manual_seed(seed)
    depths = {int(name.removeprefix("resnet")) for name in settings["backbones"]}
    if len(depths) != 1 or not all(name.startswith("resnet") for name in settings["backbones"]):
        raise ValueError(f"Received: backbones={settings['backbones']}; the reference trains CIFAR ResNets of one "
                         "depth.")
    return torch_nets.MultiBranchNet(
        settings["method"], depths.pop(), len(settings["backbones"]), settings["shared_stages"],
        settings["num_classes"], mean=settings["mean"], std=settings["std"],
    )


def make_optimizers(net: torch_nets.MultiBranchNet, settings: dict, *, alternate: bool) -> list[torch.optim.SGD]:
    """SGD with the method's momentum and weight decays: one optimiser, or one per network when DML alternates."""
    def sgd(groups: list[dict]) -> torch.optim.SGD:
        return torch.optim.SGD(groups, lr=settings["learning_rate"], momentum=settings["momentum"],
                               nesterov=settings["nesterov"])

    if alternate:
        return [sgd([{"params": list(b.parameters()), "weight_decay": settings["weight_decay"]}]) for b in net.branches]
    fusion = list(net.fusion.parameters()) if net.fusion is not None else []
    fusion_ids = {id(p) for p in fusion}
    others = [p for p in net.parameters() if id(p) not in fusion_ids]
    groups = [{"params": others, "weight_decay": settings["weight_decay"]}]
    if fusion:
        groups.append({"params": fusion, "weight_decay": settings["fusion_weight_decay"]})
    return [sgd(groups)]


def learning_rate(settings: dict, step: int, steps_per_epoch: int) -> float:
    """ffl_tf's schedule at optimizer step `step` (0-based): the batch-scaled rate, decayed after each boundary."""
    peak = settings["learning_rate"] * settings["batch_size"] / settings["lr_base_batch_size"]
    decays = sum(step > epoch * steps_per_epoch for epoch in settings["lr_decay_epochs"])
    return peak * settings["lr_decay_factor"] ** decays


class _FrozenBatchNormStatistics:
    """Within the block, train-mode batch norm normalises with batch statistics but leaves its running ones."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        self.momenta = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 0.0

    def __exit__(self, *exc) -> None:
        for layer, momentum in zip(self.layers, self.momenta):
            layer.momentum = momentum


class Trainer:
    """One training step of the method: forward, loss at w(e), backward, SGD; DML alternating if asked."""

    def __init__(self, net: torch_nets.MultiBranchNet, settings: dict, steps_per_epoch: int) -> None:
        self.net, self.settings, self.steps_per_epoch = net, settings, steps_per_epoch
        self.alternate = settings["method"] == "dml" and settings.get("dml_update", "joint") == "alternate"
        self.optimizers = make_optimizers(net, settings, alternate=self.alternate)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One step; returns the loss (summed over the networks' losses when DML alternates)."""
        self.net.train()
        lr = learning_rate(self.settings, self.steps, self.steps_per_epoch)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        kd_weight = torch_nets.rampup_weight(self.steps / self.steps_per_epoch, self.settings["rampup_epochs"])
        heads = self.net(images)
        if self.alternate:
            loss = self._alternate(heads, images, labels, kd_weight)
        else:
            total, _ = torch_nets.method_loss(self.settings["method"], heads, labels, kd_weight=kd_weight,
                                              temperature=self.settings["temperature"])
            self.optimizers[0].zero_grad(set_to_none=True)
            total.backward()
            self.optimizers[0].step()
            loss = total.item()
        self.steps += 1
        return loss

    def _alternate(self, heads: dict, images: torch.Tensor, labels: torch.Tensor, kd_weight: float) -> float:
        """DML's Algorithm 1: network k is updated with the others' current logits, then its own are recomputed
        (without touching its batch-norm running statistics a second time) for the networks after it."""
        logits = torch_nets.branch_logits(heads)
        inputs = self.net.normalize(images)  # DML's networks are independent: nothing is shared but the input
        total = 0.0
        for k, optimizer in enumerate(self.optimizers):
            teachers = [z.detach() for z in logits]
            teachers[k] = logits[k]
            loss = F.cross_entropy(logits[k], labels) + kd_weight * torch_nets.dml_distillation(
                teachers, k, self.settings["temperature"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward(retain_graph=k < len(logits) - 1)
            optimizer.step()
            total += loss.item()
            if k < len(logits) - 1:
                with torch.no_grad(), _FrozenBatchNormStatistics(self.net.branches[k]):
                    logits[k] = self.net.branches[k](inputs)[1]
        return total


# ---------------------------------------------------------------------------------------------------------
# Data: the images ffl_tf trains on, augmented as the official code augments them
# ---------------------------------------------------------------------------------------------------------


def training_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """An endless stream of full batches: a fresh permutation per pass, concatenated, cut every `batch_size`."""
    generator = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    while True:
        while len(order) < batch_size:
            order = np.concatenate([order, generator.permutation(len(images))])
        batch, order = order[:batch_size], order[batch_size:]
        yield augment(images[batch], generator, pad=images.shape[1] // 8), labels[batch]


def augment(images: np.ndarray, generator: np.random.Generator, *, pad: int) -> torch.Tensor:
    """Reflect-pad by `pad`, crop a random window of the original size, flip half of them left-right (NHWC uint8)."""
    count, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    tops = generator.integers(0, 2 * pad + 1, count)
    lefts = generator.integers(0, 2 * pad + 1, count)
    flips = generator.random(count) < 0.5
    out = np.empty_like(images)
    for i in range(count):
        crop = padded[i, tops[i]:tops[i] + height, lefts[i]:lefts[i] + width]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return torch.from_numpy(out)


def evaluate(net: torch_nets.MultiBranchNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> dict:
    """Accuracy per head (and `branch_mean`, the mean of the branches') in eval mode."""
    net.eval()
    correct: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            heads = net(torch.from_numpy(images[start:start + batch_size]))
            target = torch.from_numpy(labels[start:start + batch_size]).long()
            for name, z in heads.items():
                correct[name] = correct.get(name, 0.0) + float((z.argmax(dim=1) == target).sum())
    accuracy = {name: value / len(images) for name, value in correct.items()}
    branches = [value for name, value in accuracy.items() if name.startswith("branch_")]
    accuracy["branch_mean"] = float(np.mean(branches))
    return accuracy


# ---------------------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------------------


def write_json(path: str, value: dict) -> None:
    """Writes `value` as JSON atomically (a reader sees the old file or the whole new one)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def train(settings: dict, data_file: str, output_dir: str) -> dict:
    """Trains the run `settings` describes on `data_file`'s images; writes history.jsonl and results.json."""
    data = np.load(data_file)
    train_images, train_labels = data["train_images"], data["train_labels"].astype(np.int64)
    steps_per_epoch = max(1, len(train_images) // settings["batch_size"])
    net = build(settings, settings["seed"])
    trainer = Trainer(net, settings, steps_per_epoch)
    batches = training_batches(train_images, train_labels, settings["batch_size"], settings["seed"])
    os.makedirs(output_dir, exist_ok=True)
    history_path = os.path.join(output_dir, "history.jsonl")
    start = time.monotonic()
    with open(history_path, "w") as history:
        for epoch in range(1, settings["epochs"] + 1):
            losses = [trainer.step(images, torch.from_numpy(labels)) for images, labels in
                      (next(batches) for _ in range(steps_per_epoch))]
            accuracy = evaluate(net, data["eval_images"], data["eval_labels"])
            line = {"epoch": epoch, "loss": float(np.mean(losses)), "accuracy": accuracy,
                    "seconds": time.monotonic() - start}
            history.write(json.dumps(line) + "\n")
            history.flush()
            print(f"epoch {epoch}/{settings['epochs']}: loss {line['loss']:.4f}, "
                  + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accuracy.items()), file=sys.stderr, flush=True)
    results = {"accuracy": accuracy, "settings": settings, "epochs": settings["epochs"],
               "eval_examples": len(data["eval_labels"]), "seconds": time.monotonic() - start,
               "trainable_parameters": torch_nets.count_parameters(net), "framework": f"PyTorch {torch.__version__}"}
    write_json(os.path.join(output_dir, "results.json"), results)
    return results


def compare_initialisation(keras_weights: dict[str, np.ndarray], net: nn.Module) -> dict:
    """ffl_tf's fresh weights against this side's, tensor by tensor and pooled per kind (z-scores of the difference
    of means and of standard deviations); BN statistics are excluded, constant tensors must be equal. A random tensor
    of fewer than MIN_JUDGED_SIZE values (a 10-class bias) is judged within its kind's pooled sample only: its own
    sample variance is too noisy for a z-score (a 10-value bias reached |z| 4.07 between two correct sides)."""
    tensors, pooled = {}, {}
    for key, keras_value in keras_weights.items():
        sub_model, layer, variable = key.split("/")
        if variable in ("moving_mean", "moving_variance"):
            continue
        path = torch_nets.keras_to_torch_name(sub_model, layer)
        module = net.get_submodule(path)
        attribute, keras_value = torch_nets.to_torch_layout(module, variable, keras_value)
        torch_value = getattr(module, attribute).detach().numpy()
        kind = torch_nets.parameter_kind(attribute, module)
        tensors[key] = {"kind": kind, "n": int(keras_value.size), **_z_scores(keras_value, torch_value, kind)}
        if kind in _KURTOSIS:  # standardised by this side's spread, pooled per kind
            scale = torch_value.std() or 1.0
            parts = pooled.setdefault(kind, ([], []))
            parts[0].append(keras_value.ravel() / scale)
            parts[1].append(torch_value.ravel() / scale)
    kinds = {kind: {"tensors": len(a), **_z_scores(np.concatenate(a), np.concatenate(b), kind)}
             for kind, (a, b) in pooled.items()}
    judged = [t for t in tensors.values() if t["n"] >= MIN_JUDGED_SIZE or t["kind"] not in _KURTOSIS]
    worst = max(max(abs(t["z_mean"]), abs(t["z_std"])) for t in [*judged, *kinds.values()])
    return {"tensors": tensors, "pooled": kinds, "worst_z": worst, "bound": Z_BOUND, "ok": worst <= Z_BOUND}


def _z_scores(a: np.ndarray, b: np.ndarray, kind: str) -> dict:
    """Means and standard deviations of two samples and the z-scores of their differences (0 when both constant)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    kurtosis = _KURTOSIS.get(kind, 3.0)
    se_mean = np.sqrt(a.var() / a.size + b.var() / b.size)
    se_std = np.sqrt((kurtosis - 1) / 4 * (a.var() / a.size + b.var() / b.size))
    difference_mean, difference_std = a.mean() - b.mean(), a.std() - b.std()
    return {"mean": [float(a.mean()), float(b.mean())], "std": [float(a.std()), float(b.std())],
            "z_mean": float(difference_mean / se_mean) if se_mean else float(1e9 * abs(difference_mean)),
            "z_std": float(difference_std / se_std) if se_std else float(1e9 * abs(difference_std))}


def check(settings: dict, reference_file: str) -> dict:
    """The initialisation check, then the one-step check from ffl_tf's weights (DML updated jointly, as ffl_tf)."""
    reference = dict(np.load(reference_file))
    weights = {key.removeprefix("weights/"): value for key, value in reference.items() if key.startswith("weights/")}
    net = build(settings, settings["seed"])
    initialisation = compare_initialisation(weights, net)
    torch_nets.load_keras_weights(net, weights)
    images, labels = torch.from_numpy(reference["images"]), torch.from_numpy(reference["labels"]).long()
    trainer = Trainer(net, {**settings, "dml_update": "joint"}, int(reference["steps_per_epoch"]))

    def parts() -> dict[str, float]:
        total, values = torch_nets.method_loss(settings["method"], net(images), labels, kd_weight=1.0,
                                               temperature=settings["temperature"])
        return {"total_w1": float(total), **{name: float(value) for name, value in values.items()}}

    with torch.no_grad():
        net.eval()
        logits = {name: z.numpy() for name, z in net(images).items()}
        net.train()
        train_parts = parts()
        train_parts["l2"] = float(sum(0.5 * group["weight_decay"] * sum(p.square().sum() for p in group["params"])
                                      for optimizer in trainer.optimizers for group in optimizer.param_groups))
    trainer.step(images, labels)
    with torch.no_grad():
        after_step = parts()
    return {
        "initialisation": initialisation,
        "trainable_params": torch_nets.count_parameters(net),
        "logits_max_abs_diff": {k: float(np.abs(z - reference[f"eval/{k}"]).max()) for k, z in logits.items()},
        "logits_max_abs": {k: float(np.abs(z).max()) for k, z in logits.items()},
        "train": train_parts,
        "after_step": after_step,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("train", "check"))
    parser.add_argument("--settings", required=True, help="JSON file of the run's settings (reproduce.py writes it).")
    parser.add_argument("--data", help="train: the .npz file of the images (train_images, train_labels, eval_...).")
    parser.add_argument("--output_dir", help="train: where history.jsonl and results.json go.")
    parser.add_argument("--reference", help="check: the .npz file of ffl_tf's weights and outputs.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Intra-op threads.")
    args = parser.parse_args(argv)
    needed = {"train": ("data", "output_dir"), "check": ("reference",)}[args.command]
    missing = [f"--{name}" for name in needed if not getattr(args, name)]
    if missing:
        parser.error(f"{args.command} needs {', '.join(missing)}")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with open(args.settings) as f:
        settings = json.load(f)
    if args.command == "train":
        train(settings, args.data, args.output_dir)
    else:
        print(json.dumps(check(settings, args.reference)))


if __name__ == "__main__":
    main(sys.argv[1:])
