"""FFL's train step in PyTorch, written from docs/method.md: what benchmarks/vs_pytorch.py times ffl_tf against.

The network is two CIFAR ResNet-32 branches (BasicBlocks, widths 16/32/64) sharing the stem and stages 1-2,
each with its own stage 3, global average pool and linear classifier, plus FFL's fusion module (concat ->
depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU -> GAP -> linear). The loss is M5 at the
ramp-up weight w(e) of M6, and the optimizer SGD 0.1, Nesterov momentum 0.9, with PyTorch's weight_decay
1e-4 on the branches and 1e-5 on the fusion module (two parameter groups). The step takes raw uint8 NHWC
images and normalises them itself, as ffl_tf's model does. In bfloat16 mode the forward pass and the loss
run under `torch.autocast("cpu", dtype=torch.bfloat16)`, with the classifiers in float32 as ffl_tf's
float32 Dense heads are under Keras's mixed_bfloat16 policy.

This file is run by path, in a process that holds PyTorch alone (TensorFlow and PyTorch in one process
would compete for threads; nothing of ffl_tf needs PyTorch). It needs only torch and numpy
(benchmarks/requirements.txt); the network and the loss are benchmarks/torch_nets.py's. vs_pytorch.py runs it as

    python benchmarks/torch_ffl.py check --reference=FILE   # compare with ffl_tf's outputs saved in FILE
    python benchmarks/torch_ffl.py serve --mode=bfloat16    # a timing worker (see `serve`)

Both write their answers as JSON lines on standard output and everything else on standard error.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import timing  # benchmarks/timing.py: this file runs by path, so its directory is on sys.path
import torch
import torch_nets  # benchmarks/torch_nets.py, likewise

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
# The network, the loss, the optimizer, the train step (the network and the loss: benchmarks/torch_nets.py)
# ---------------------------------------------------------------------------------------------------------


def ffl_loss(heads: dict[str, torch.Tensor], labels: torch.Tensor, *, kd_weight: float) -> tuple:
    """L of M5 and its parts, named as ffl_tf's `losses.FFL_PARTS`, at the official temperature."""
    return torch_nets.method_loss("ffl", heads, labels, kd_weight=kd_weight, temperature=TEMPERATURE)


def make_optimizer(net: torch_nets.MultiBranchNet) -> torch.optim.SGD:
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

    def __init__(self, net: torch_nets.MultiBranchNet, *, bfloat16: bool) -> None:
        self.net, self.bfloat16 = net, bfloat16
        self.optimizer = make_optimizer(net)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One train step; returns the loss as a float, which waits for the step to finish."""
        self.net.train()
        kd_weight = torch_nets.rampup_weight(self.steps / STEPS_PER_EPOCH, RAMPUP_EPOCHS)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16):
            loss, _ = ffl_loss(self.net(images), labels, kd_weight=kd_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.item()


# ---------------------------------------------------------------------------------------------------------
# The two commands
# ---------------------------------------------------------------------------------------------------------


def configure_threads(threads: int, interop_threads: int) -> None:
    """Intra-op (OpenMP) and inter-op thread counts; set before any parallel work."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(interop_threads)


def build(memory_format: str, seed: int, num_classes: int) -> torch_nets.MultiBranchNet:
    """The network (two ResNet-32 branches sharing stem and stages 1-2, the fusion module), seeded, in
    `memory_format`; uint8 images are normalised inside as (pixels - 0) / 255, as vs_pytorch's ffl_tf model."""
    torch.manual_seed(seed)
    fmt = MEMORY_FORMATS[memory_format]
    net = torch_nets.MultiBranchNet("ffl", 32, 2, 2, num_classes, memory_format=fmt)
    return net.to(memory_format=fmt)


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
    torch_nets.load_keras_weights(net, weights)
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
        "trainable_params": torch_nets.count_parameters(net),
        "fusion_params": torch_nets.count_parameters(net.fusion),
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
        torch_nets.load_keras_weights(net, {k.removeprefix("weights/"): reference[k] for k in reference.files
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
        "trainable_params": torch_nets.count_parameters(net),
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
