"""FFL's train step in PyTorch, written from docs/method.md: what benchmarks/vs_pytorch.py times ffl_tf against.

The network is two CIFAR ResNet-32 branches (BasicBlocks, widths 16/32/64) sharing the stem and stages 1-2,
each with its own stage 3, global average pool and linear classifier, plus FFL's fusion module (concat ->
depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU -> GAP -> linear). The loss is M5 at the
ramp-up weight w(e) of M6, and the optimizer SGD 0.1, Nesterov momentum 0.9, with PyTorch's weight_decay
1e-4 on the branches and 1e-5 on the fusion module (two parameter groups). The step takes raw uint8 NHWC
images and normalises them itself, as ffl_tf's model does. In bfloat16 mode the forward pass and the loss
run under `torch.autocast("cpu", dtype=torch.bfloat16)`, with the classifiers in float32 as ffl_tf's
float32 Dense heads are under Keras's mixed_bfloat16 policy.

This file is run by path, never imported from the `benchmarks` package: that package imports ffl_tf and so
TensorFlow, and this process must hold PyTorch alone (nothing of ffl_tf needs PyTorch). It needs only
torch and numpy (benchmarks/requirements.txt). vs_pytorch.py runs it as

    python benchmarks/torch_ffl.py check --reference=FILE   # compare with ffl_tf's outputs saved in FILE
    python benchmarks/torch_ffl.py serve --mode=bfloat16    # a timing worker (see `serve`)

Both write their answers as JSON lines on standard output and everything else on standard error.
"""

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable

import numpy as np
import timing  # benchmarks/timing.py: this file runs by path, so its directory is on sys.path
import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (16, 32, 64)
# The official recipe (docs/method.md): T, ramp-up epochs R, SGD, weight decays; CIFAR's 391 steps an epoch.
TEMPERATURE = 3.0
RAMPUP_EPOCHS = 80.0
STEPS_PER_EPOCH = 391
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
FUSION_WEIGHT_DECAY = 1e-5
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
# Wall clock is what training waits for; the process's CPU time (all threads) is less sensitive to load.


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU; a 1x1 conv + BN shortcut when the shape changes.

    Every 3x3 conv pads 1 pixel on each side, also at stride 2 (what ffl_tf's explicit padding copies).
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def resnet_stage(in_channels: int, channels: int, stride: int, blocks: int) -> nn.Sequential:
    """`blocks` BasicBlocks, the first one at `stride`."""
    return nn.Sequential(*(
        BasicBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1) for i in range(blocks)
    ))


def classify(classifier: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """Global average pool, then `classifier` in float32 even under autocast (ffl_tf's heads are float32)."""
    pooled = features.mean(dim=(2, 3))
    with torch.autocast("cpu", enabled=False):
        return classifier(pooled.to(classifier.weight.dtype))


class Branch(nn.Module):
    """A branch's own part: stage 3, global average pooling and the classifier."""

    def __init__(self, blocks: int, num_classes: int) -> None:
        super().__init__()
        self.stage3 = resnet_stage(WIDTHS[1], WIDTHS[2], 2, blocks)
        self.classifier = nn.Linear(WIDTHS[2], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature map F_k, logits z_k)."""
        features = self.stage3(x)
        return features, classify(self.classifier, features)


class Fusion(nn.Module):
    """FFL's fusion module (M1-M2): concatenated maps -> depthwise 3x3 -> BN-ReLU -> pointwise 1x1 -> BN-ReLU -> z_f."""

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = F.relu(self.depthwise_bn(self.depthwise(torch.cat(maps, dim=1))))
        x = F.relu(self.pointwise_bn(self.pointwise(x)))
        return classify(self.classifier, x)


class FFLNet(nn.Module):
    """Raw uint8 NHWC images -> {"branch_<k>", "ensemble", "fused"} logits, as ffl_tf's FFL model.

    Module names follow ffl_tf's layer names (stem_conv, stage1, ..., fusion.depthwise) so that
    `keras_to_torch_name` can map one to the other.
    """

    def __init__(self, depth: int = 32, num_classes: int = 100, num_branches: int = 2,
                 mean: float = 0.0, std: float = 255.0, memory_format: torch.memory_format = torch.channels_last):
        super().__init__()
        blocks = (depth - 2) // 6
        self.mean, self.std, self.memory_format = mean, std, memory_format
        self.stem_conv = nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(WIDTHS[0])
        self.stage1 = resnet_stage(WIDTHS[0], WIDTHS[0], 1, blocks)
        self.stage2 = resnet_stage(WIDTHS[0], WIDTHS[1], 2, blocks)
        self.branches = nn.ModuleList(Branch(blocks, num_classes) for _ in range(num_branches))
        self.fusion = Fusion(num_branches * WIDTHS[2], WIDTHS[2], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # as the official code (and ffl_tf's conv_init)
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # NHWC uint8 viewed as NCHW: already channels_last strides, so that format needs no copy.
        x = images.permute(0, 3, 1, 2).to(dtype=self.stem_conv.weight.dtype, memory_format=self.memory_format)
        x = (x - self.mean) / self.std
        x = self.stage2(self.stage1(F.relu(self.stem_bn(self.stem_conv(x)))))
        features, logits = zip(*(branch(x) for branch in self.branches))
        heads = {f"branch_{k}": z for k, z in enumerate(logits)}
        heads["ensemble"] = torch.stack(logits).mean(dim=0)  # z_e (M3)
        heads["fused"] = self.fusion(list(features))
        return heads


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------------
# Loss, optimizer, train step
# ---------------------------------------------------------------------------------------------------------


def kl_t(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL_T(t -> s) (M4): T^2 * batch mean of KL(softmax(t/T) || softmax(s/T)), the teacher detached."""
    log_q = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


def ffl_loss(heads: dict[str, torch.Tensor], labels: torch.Tensor, *, kd_weight: float,
             temperature: float = TEMPERATURE) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L of M5 and its parts, named as ffl_tf's `losses.FFL_PARTS`."""
    branches = [heads[name] for name in heads if name.startswith("branch_")]
    fused, ensemble = heads["fused"], heads["ensemble"]
    parts = {
        "ce_branches": sum(F.cross_entropy(z.float(), labels) for z in branches),
        "ce_fused": F.cross_entropy(fused.float(), labels),
        "kd_branches": sum(kl_t(fused, z, temperature) for z in branches),
        "kd_fused": kl_t(ensemble, fused, temperature),
    }
    total = parts["ce_branches"] + parts["ce_fused"] + kd_weight * (parts["kd_branches"] + parts["kd_fused"])
    return total, parts


def rampup_weight(epoch: float, rampup_epochs: float = RAMPUP_EPOCHS) -> float:
    """w(e) = exp(-5 (1 - min(e, R)/R)^2) (M6)."""
    return math.exp(-5.0 * (1.0 - min(epoch, rampup_epochs) / rampup_epochs) ** 2) if rampup_epochs > 0 else 1.0


def make_optimizer(net: FFLNet) -> torch.optim.SGD:
    """Nesterov SGD, two parameter groups: weight decay 1e-4 on the branches (and trunk), 1e-5 on the fusion module."""
    fusion = list(net.fusion.parameters())
    fusion_ids = {id(p) for p in fusion}
    others = [p for p in net.parameters() if id(p) not in fusion_ids]
    return torch.optim.SGD(
        [{"params": others, "weight_decay": WEIGHT_DECAY}, {"params": fusion, "weight_decay": FUSION_WEIGHT_DECAY}],
        lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True,
    )


def l2_penalty(optimizer: torch.optim.Optimizer) -> float:
    """Sum over groups of weight_decay/2 * ||w||^2: the penalty ffl_tf adds to its loss (gradient: SGD's decay)."""
    with torch.no_grad():
        return float(sum(0.5 * g["weight_decay"] * sum(p.square().sum() for p in g["params"])
                         for g in optimizer.param_groups))


class Trainer:
    """FFL's train step: forward (under autocast in bfloat16 mode), loss M5 at w(e), backward, SGD update."""

    def __init__(self, net: FFLNet, *, bfloat16: bool) -> None:
        self.net, self.bfloat16 = net, bfloat16
        self.optimizer = make_optimizer(net)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One train step; returns the loss as a float, which waits for the step to finish."""
        self.net.train()
        kd_weight = rampup_weight(self.steps / STEPS_PER_EPOCH)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16):
            loss, _ = ffl_loss(self.net(images), labels, kd_weight=kd_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.item()


# ---------------------------------------------------------------------------------------------------------
# ffl_tf's weights (saved by vs_pytorch.py as "<sub-model>/<layer>/<variable>" arrays)
# ---------------------------------------------------------------------------------------------------------

_BLOCK_LAYER = re.compile(r"^stage(\d)_block(\d+)_(1|2|shortcut)_(conv|bn)$")
_BLOCK_PART = {("1", "conv"): "conv1", ("1", "bn"): "bn1", ("2", "conv"): "conv2", ("2", "bn"): "bn2",
               ("shortcut", "conv"): "shortcut.0", ("shortcut", "bn"): "shortcut.1"}
_BN_VARIABLES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def keras_to_torch_name(sub_model: str, layer: str) -> str:
    """The `FFLNet` module holding ffl_tf's layer `layer` of sub-model `trunk`, `branch_<k>` or `fusion`.

    E.g. ("trunk", "stage2_block0_shortcut_conv") -> "stage2.0.shortcut.0",
    ("branch_1", "classifier") -> "branches.1.classifier", ("fusion", "pointwise_bn") -> "fusion.pointwise_bn".
    """
    match = _BLOCK_LAYER.match(layer)
    name = f"stage{match[1]}.{match[2]}.{_BLOCK_PART[match[3], match[4]]}" if match else layer
    if sub_model == "trunk":
        return name
    if sub_model.startswith("branch_"):
        return f"branches.{sub_model.removeprefix('branch_')}.{name}"
    return f"{sub_model}.{name}"


def to_torch_layout(module: nn.Module, variable: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(attribute of `module`, `value` in PyTorch's layout) for Keras variable `variable` of the layer.

    Conv kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (C, 1, H, W); dense kernels (in, out) ->
    (out, in); BN gamma/beta/moving mean/moving variance -> weight/bias/running_mean/running_var.
    """
    if isinstance(module, nn.BatchNorm2d):
        return _BN_VARIABLES[variable], value
    if isinstance(module, nn.Conv2d) and variable == "kernel":
        if module.groups > 1:
            height, width, channels, multiplier = value.shape
            return "weight", value.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        return "weight", value.transpose(3, 2, 0, 1)
    if isinstance(module, nn.Linear):
        return {"kernel": "weight", "bias": "bias"}[variable], value.T if variable == "kernel" else value
    raise ValueError(f"No PyTorch counterpart for variable {variable!r} of {type(module).__name__}.")


def load_keras_weights(net: FFLNet, weights: dict[str, np.ndarray]) -> None:
    """Copies ffl_tf's variables into `net`; raises if any variable or any PyTorch tensor is left unmatched."""
    assigned = set()
    with torch.no_grad():
        for key, value in weights.items():
            sub_model, layer, variable = key.split("/")
            path = keras_to_torch_name(sub_model, layer)
            attribute, value = to_torch_layout(net.get_submodule(path), variable, value)
            target = getattr(net.get_submodule(path), attribute)
            if tuple(target.shape) != value.shape:
                raise ValueError(f"{key} -> {path}.{attribute}: shape {value.shape} != {tuple(target.shape)}.")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))  # keeps the target's memory format
            assigned.add(f"{path}.{attribute}")
    expected = {name for name, _ in net.named_parameters()} | {
        name for name, _ in net.named_buffers() if not name.endswith("num_batches_tracked")
    }
    if expected != assigned:
        raise ValueError(f"Unmatched tensors: PyTorch only {sorted(expected - assigned)}, "
                         f"ffl_tf only {sorted(assigned - expected)}.")


# ---------------------------------------------------------------------------------------------------------
# The two commands
# ---------------------------------------------------------------------------------------------------------


def configure_threads(threads: int, interop_threads: int) -> None:
    """Intra-op (OpenMP) and inter-op thread counts; set before any parallel work."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(interop_threads)


def build(memory_format: str, seed: int, num_classes: int) -> FFLNet:
    """The network, seeded, in `memory_format`."""
    torch.manual_seed(seed)
    fmt = MEMORY_FORMATS[memory_format]
    return FFLNet(num_classes=num_classes, memory_format=fmt).to(memory_format=fmt)


def fixed_batch(batch_size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch vs_pytorch.py's ffl_tf worker trains on (timing.fixed_batch): uint8 NHWC images, int64 labels."""
    images, labels = timing.fixed_batch(batch_size, num_classes, (32, 32, 3), seed)
    return torch.from_numpy(images), torch.from_numpy(labels)


def parts_as_floats(heads: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """The loss's parts and its total at w = 1 (so that the KD terms weigh fully), as floats."""
    total, parts = ffl_loss(heads, labels, kd_weight=1.0)
    return {"total_w1": float(total), **{name: float(value) for name, value in parts.items()}}


def check(reference_file: str, memory_format: str) -> dict:
    """The float32 network with ffl_tf's weights, evaluated as vs_pytorch.py evaluated ffl_tf's model.

    Returns the trainable parameter counts, the largest |difference| of each head's eval-mode logits from
    ffl_tf's, and PyTorch's values of the train-mode loss parts, of the L2 penalty, and of the loss parts
    after one train step from these weights (BN in train mode normalises with batch statistics on both sides).
    """
    reference = dict(np.load(reference_file))
    weights = {key.removeprefix("weights/"): value for key, value in reference.items() if key.startswith("weights/")}
    images, labels = torch.from_numpy(reference["images"]), torch.from_numpy(reference["labels"])
    net = build(memory_format, 0, int(reference["num_classes"]))
    load_keras_weights(net, weights)
    trainer = Trainer(net, bfloat16=False)
    with torch.no_grad():
        net.eval()
        logits = {name: z.numpy() for name, z in net(images).items()}
        net.train()
        train = parts_as_floats(net(images), labels)
    train["l2"] = l2_penalty(trainer.optimizer)
    trainer.step(images, labels)
    with torch.no_grad():
        after_step = parts_as_floats(net(images), labels)
    return {
        "trainable_params": count_parameters(net),
        "fusion_params": count_parameters(net.fusion),
        "logits_max_abs": {name: float(np.abs(z).max()) for name, z in logits.items()},
        "logits_max_abs_diff": {name: float(np.abs(z - reference[f"eval/{name}"]).max()) for name, z in logits.items()},
        "train": train,
        "after_step": after_step,
    }


def serve(args: argparse.Namespace, reply: Callable[[dict], None]) -> None:
    """A timing worker: builds the network, takes one untimed step, replies {"ready": info}, then answers
    each request line {"steps": K} on standard input with {"wall": [...], "cpu": [...]} (seconds per step),
    until {"quit": true} or the end of the input.
    """
    net = build(args.memory_format, args.seed, args.num_classes)
    if args.weights:
        reference = np.load(args.weights)
        load_keras_weights(net, {k.removeprefix("weights/"): reference[k] for k in reference.files
                                 if k.startswith("weights/")})
    trainer = Trainer(net, bfloat16=args.mode == "bfloat16")
    images, labels = fixed_batch(args.batch_size, args.num_classes, args.seed)

    def step() -> float:
        return trainer.step(images, labels)

    start = time.perf_counter()
    step()
    reply({"ready": {
        "framework": f"PyTorch {torch.__version__}",
        "threads": f"torch.set_num_threads({torch.get_num_threads()}), "
                   f"set_num_interop_threads({torch.get_num_interop_threads()}), "
                   f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        "details": f"memory format {args.memory_format}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                   f"mkldnn bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, "
                   f"weights {'from ffl_tf' if args.weights else 'kaiming init'}",
        "first_step_s": time.perf_counter() - start,
        "trainable_params": count_parameters(net),
    }})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        reply(timing.time_steps(step, int(request["steps"])))


def reply_channel() -> Callable[[dict], None]:
    """A function writing one JSON line to the original standard output, which from now on only it uses:
    file descriptor 1 becomes a copy of standard error, so that whatever a library prints cannot corrupt
    the answers.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def reply(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")

    return reply


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("check", "serve"))
    parser.add_argument("--mode", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--memory_format", choices=tuple(MEMORY_FORMATS), default="channels_last")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Intra-op threads.")
    parser.add_argument("--interop_threads", type=int, default=1, help="Inter-op threads.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the weights and of the batch.")
    parser.add_argument("--reference", help="check: the .npz file of ffl_tf's weights and outputs.")
    parser.add_argument("--weights", help="serve: start from ffl_tf's weights in this .npz file.")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    reply = reply_channel()
    configure_threads(args.threads, args.interop_threads)
    if args.command == "check":
        reply(check(args.reference, args.memory_format))
    else:
        serve(args, reply)


if __name__ == "__main__":
    main(sys.argv[1:])
