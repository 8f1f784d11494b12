"""The reference networks and losses in PyTorch, written from the papers and their official code (read, not copied).

What the PyTorch side of the benchmarks builds (benchmarks/torch_ffl.py times FFL's step with it,
benchmarks/torch_reference.py trains every method with it). Framework-free of TensorFlow: it is imported
only by files that run by path, in processes that hold PyTorch alone.

The network is the one of the official FFL and ONE code: a CIFAR ResNet of depth 6n+2 with BasicBlocks
(widths 16/32/64; every 3x3 conv pads 1 pixel on each side, also at stride 2), K branches either sharing
the stem and the first S stages (a trunk) or independent (S = 0), each branch ending in global average
pooling and a linear classifier; FFL adds its fusion module, ONE its gate. Initialisation is the official
code's: convs normal(0, sqrt(2 / (k * k * out_channels))) (kaiming_normal_, fan_out, ReLU gain), batch norm
weight 1 and bias 0, `nn.Linear` left at PyTorch's default (kernel and bias uniform in +-1/sqrt(fan_in)).

Module names follow ffl_tf's layer names, so `keras_to_torch_name` maps one onto the other (ffl_tf's
sub-models `trunk`, `branch_<k>`, `fusion`, `gate`; its layers `stem_conv`, `stage2_block0_1_conv`, ...).
Heads are named as ffl_tf's: `branch_<k>`, `ensemble` (the mean of the branch logits, or ONE's gated sum)
and FFL's `fused`; the loss parts too (`ce_branches`, `kd_branches`, ...).
"""

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (16, 32, 64)
METHODS = ("vanilla", "dml", "one", "ffl")


# ---------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU; a 1x1 conv + BN shortcut when the shape changes."""

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


class ResNetPart(nn.Module):
    """Stages `first`..`last` (1-based) of a CIFAR ResNet, with the stem when `first` is 1 and the pooled
    classifier when `num_classes` is given: a trunk, a branch of a trunk, or a whole network."""

    def __init__(self, blocks: int, first: int, last: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.first, self.last = first, last
        if first == 1:
            self.stem_conv = nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(WIDTHS[0])
        for stage in range(first, last + 1):
            in_channels = WIDTHS[max(stage - 2, 0)]
            stride = 1 if stage == 1 else 2
            self.add_module(f"stage{stage}", resnet_stage(in_channels, WIDTHS[stage - 1], stride, blocks))
        self.classifier = nn.Linear(WIDTHS[last - 1], num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the last feature map, the logits or None)."""
        if self.first == 1:
            x = F.relu(self.stem_bn(self.stem_conv(x)))
        for stage in range(self.first, self.last + 1):
            x = getattr(self, f"stage{stage}")(x)
        return x, None if self.classifier is None else classify(self.classifier, x)


class Fusion(nn.Module):
    """FFL's fusion module: concatenated maps -> depthwise 3x3 -> BN-ReLU -> pointwise 1x1 -> BN-ReLU -> z_f."""

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


class Gate(nn.Module):
    """ONE's gate (official ONE code): the trunk's pooled features -> linear(K) -> BN -> ReLU -> softmax."""

    def __init__(self, in_channels: int, num_branches: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_channels, num_branches)
        self.bn = nn.BatchNorm1d(num_branches)

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return F.softmax(F.relu(self.bn(self.dense(trunk.mean(dim=(2, 3)).float()))), dim=1)


class MultiBranchNet(nn.Module):
    """Raw uint8 NHWC images -> {"branch_<k>", "ensemble" (K > 1), "fused" (ffl)} logits, as ffl_tf's models.

    Args:
        method: "vanilla", "dml" (independent networks), "one" (adds the gate) or "ffl" (adds the fusion module).
        depth: CIFAR ResNet depth, 6n+2.
        num_branches: K.
        shared_stages: S, the stages shared with the stem (0: independent networks).
        num_classes: classes of every classifier.
        mean, std: per-channel pixel statistics in 0..255 units; images are normalised inside, as ffl_tf does.
        memory_format: the activations' memory format.
    """

    def __init__(self, method: str, depth: int, num_branches: int, shared_stages: int, num_classes: int, *,
                 mean=(0.0,), std=(255.0,), memory_format: torch.memory_format = torch.channels_last) -> None:
        super().__init__()
        if method not in METHODS or (depth - 2) % 6:
            raise ValueError(f"Received: method={method!r}, depth={depth}; expected one of {METHODS}, depth 6n+2.")
        blocks = (depth - 2) // 6
        self.method, self.memory_format = method, memory_format
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.trunk = ResNetPart(blocks, 1, shared_stages) if shared_stages else None
        self.branches = nn.ModuleList(
            ResNetPart(blocks, shared_stages + 1, len(WIDTHS), num_classes) for _ in range(num_branches)
        )
        self.fusion = Fusion(num_branches * WIDTHS[-1], WIDTHS[-1], num_classes) if method == "ffl" else None
        self.gate = Gate(WIDTHS[shared_stages - 1], num_branches) if method == "one" else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # the official code's normal(0, sqrt(2 / (k * k * out_channels)))
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC images -> normalised float NCHW (in `memory_format`)."""
        # NHWC uint8 viewed as NCHW: already channels_last strides, so that format needs no copy.
        x = images.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=self.memory_format)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(images)
        trunk = self.trunk(x)[0] if self.trunk is not None else x
        features, logits = zip(*(branch(trunk) for branch in self.branches))
        heads = {f"branch_{k}": z for k, z in enumerate(logits)}
        if self.gate is not None:
            gate = self.gate(trunk)
            heads["ensemble"] = (gate.unsqueeze(-1) * torch.stack(logits, dim=1)).sum(dim=1)
        elif len(logits) > 1:
            heads["ensemble"] = torch.stack(logits).mean(dim=0)
        if self.fusion is not None:
            heads["fused"] = self.fusion(list(features))
        return heads


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------------
# Losses (docs/method.md)
# ---------------------------------------------------------------------------------------------------------


def kl_t(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL_T(t -> s): T^2 * batch mean of KL(softmax(t/T) || softmax(s/T)), the teacher detached."""
    log_q = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


def rampup_weight(epoch: float, rampup_epochs: float) -> float:
    """w(e) = exp(-5 (1 - min(e, R)/R)^2), 1 when R = 0."""
    return math.exp(-5.0 * (1.0 - min(epoch, rampup_epochs) / rampup_epochs) ** 2) if rampup_epochs > 0 else 1.0


def branch_logits(heads: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [heads[name] for name in heads if name.startswith("branch_")]


def method_loss(method: str, heads: dict[str, torch.Tensor], labels: torch.Tensor, *, kd_weight: float,
                temperature: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The method's loss at w(e) = `kd_weight` and its parts, named as ffl_tf's."""
    branches = branch_logits(heads)
    parts = {"ce_branches": sum(F.cross_entropy(z.float(), labels) for z in branches)}
    if method == "vanilla":
        return parts["ce_branches"], parts
    if method == "dml":
        parts["kd_branches"] = sum(dml_distillation(branches, k, temperature) for k in range(len(branches)))
        return parts["ce_branches"] + kd_weight * parts["kd_branches"], parts
    teacher = heads["fused" if method == "ffl" else "ensemble"]
    parts["ce_fused" if method == "ffl" else "ce_ensemble"] = F.cross_entropy(teacher.float(), labels)
    parts["kd_branches"] = sum(kl_t(teacher, z, temperature) for z in branches)
    if method == "ffl":
        parts["kd_fused"] = kl_t(heads["ensemble"], teacher, temperature)
    distillation = parts["kd_branches"] + parts.get("kd_fused", 0.0)
    return sum(v for k, v in parts.items() if k.startswith("ce_")) + kd_weight * distillation, parts


def dml_distillation(branches: list[torch.Tensor], k: int, temperature: float) -> torch.Tensor:
    """DML's distillation into network k: the mean over the other networks j of KL_T(z_j -> z_k)."""
    others = [z for j, z in enumerate(branches) if j != k]
    return sum(kl_t(z, branches[k], temperature) for z in others) / len(others)


# ---------------------------------------------------------------------------------------------------------
# ffl_tf's weights ("<sub-model>/<layer>/<variable>" arrays) and names
# ---------------------------------------------------------------------------------------------------------

_BLOCK_LAYER = re.compile(r"^stage(\d)_block(\d+)_(1|2|shortcut)_(conv|bn)$")
_BLOCK_PART = {("1", "conv"): "conv1", ("1", "bn"): "bn1", ("2", "conv"): "conv2", ("2", "bn"): "bn2",
               ("shortcut", "conv"): "shortcut.0", ("shortcut", "bn"): "shortcut.1"}
_BN_VARIABLES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def keras_to_torch_name(sub_model: str, layer: str) -> str:
    """The `MultiBranchNet` module holding ffl_tf's layer `layer` of sub-model `trunk`, `branch_<k>`, `fusion`
    or `gate`. E.g. ("trunk", "stage2_block0_shortcut_conv") -> "trunk.stage2.0.shortcut.0",
    ("branch_1", "classifier") -> "branches.1.classifier", ("fusion", "pointwise_bn") -> "fusion.pointwise_bn".
    """
    match = _BLOCK_LAYER.match(layer)
    name = f"stage{match[1]}.{match[2]}.{_BLOCK_PART[match[3], match[4]]}" if match else layer
    if sub_model.startswith("branch_"):
        return f"branches.{sub_model.removeprefix('branch_')}.{name}"
    return f"{sub_model}.{name}"


def to_torch_layout(module: nn.Module, variable: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(attribute of `module`, `value` in PyTorch's layout) for Keras variable `variable` of the layer.

    Conv kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (C, 1, H, W); dense kernels (in, out) ->
    (out, in); BN gamma/beta/moving mean/moving variance -> weight/bias/running_mean/running_var.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _BN_VARIABLES[variable], value
    if isinstance(module, nn.Conv2d) and variable == "kernel":
        if module.groups > 1:
            height, width, channels, multiplier = value.shape
            return "weight", value.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        return "weight", value.transpose(3, 2, 0, 1)
    if isinstance(module, nn.Linear):
        return {"kernel": "weight", "bias": "bias"}[variable], value.T if variable == "kernel" else value
    raise ValueError(f"No PyTorch counterpart for variable {variable!r} of {type(module).__name__}.")


def load_keras_weights(net: nn.Module, weights: dict[str, np.ndarray]) -> None:
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
        name for name, _ in net.named_buffers() if not name.endswith("num_batches_tracked") and "." in name
    }
    if expected != assigned:
        raise ValueError(f"Unmatched tensors: PyTorch only {sorted(expected - assigned)}, "
                         f"ffl_tf only {sorted(assigned - expected)}.")


def parameter_kind(name: str, module: nn.Module) -> str:
    """A parameter's kind for the initialisation check: conv, depthwise, linear kernel or bias, BN weight or bias."""
    if isinstance(module, nn.Conv2d):
        return "depthwise" if module.groups > 1 else "conv"
    if isinstance(module, nn.Linear):
        return f"linear_{'kernel' if name == 'weight' else 'bias'}"
    return f"bn_{'gamma' if name == 'weight' else 'beta'}"
