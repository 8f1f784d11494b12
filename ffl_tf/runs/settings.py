"""The settings of a training run: each declared once, with its flag's default and help, and what it is to a run.

Every flag that describes a run is a `Setting` of a config.json section (`model`, `dataset`, `loss`,
`training`, `execution`) with a `Role`: `FIXED` (it changes what the run computes, and a checkpoint can only
continue under the same value), `RESULT` (it changes what the run computes; a resumed run may change it,
with a warning) or `EXECUTION` (only how the run executes). Resume checks and a comparison's reuse of
finished runs read these roles; nothing else lists them. Flags without a section (`model_dir`, `download`,
`verbose`) are about this process only. A flag whose default is None and that names a setting of a method's
own (`METHOD_SETTINGS`) takes that method's default (`ffl_tf/methods/<method>.py`), or the fallback here
when the method has none: `resolve` is the one place that does it.

This module declares; `ffl_tf.runs.train_flags` defines the absl flags from these declarations (importing
this module defines no flag, so the library can read configs without touching absl's global flags).
"""

import dataclasses
import enum
import os
from typing import Any

from ffl_tf import methods
from ffl_tf.backbones import BACKBONES
from ffl_tf.data import DATASETS


class Role(enum.Enum):
    FIXED = "fixed"  # changes what the run computes; a checkpoint continues only under the same value
    RESULT = "result"  # changes what the run computes; a resumed run may change it (with a warning)
    EXECUTION = "execution"  # only how the run executes


@dataclasses.dataclass(frozen=True)
class Flag:
    """A flag's declaration: absl's DEFINE_<kind>(name, default, *args, **kwargs), and, for a flag that
    describes a run, its config.json section and its role (None for a flag about this process only)."""

    name: str
    section: str | None
    role: Role | None
    kind: str
    default: Any
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)


# Every training flag, in --help order; SETTINGS: those that describe a run.
FLAGS: dict[str, Flag] = {}
SETTINGS: dict[str, Flag] = {}
# Settings of a method's own: unset, they take the method's default, else this fallback (None: the setting
# does not apply to a method that does not declare it).
METHOD_SETTINGS: dict[str, object] = {
    "shared_stages": 0, "fusion_channels": None, "temperature": None, "distill_to_fused": None,
    "distill_to_branches": None, "rampup_epochs": None, "nesterov": True, "weight_decay": 1e-4,
    "fusion_weight_decay": None,
}


def _flag(section: str | None, role: Role | None, kind: str, name: str, default, *args, **kwargs) -> None:
    """Declares flag `name` (absl's DEFINE_<kind>(name, default, *args, **kwargs)), its section and its role."""
    FLAGS[name] = Flag(name, section, role, kind, default, args, kwargs)
    if section:
        SETTINGS[name] = FLAGS[name]


def _method_default(name: str) -> str:
    values = ", ".join(f"{m} {method.defaults[name]}" for m, method in methods.METHODS.items()
                       if name in method.defaults)
    fallback = METHOD_SETTINGS[name]
    return f"Default: the method's ({values}{'' if fallback is None else f'; otherwise {fallback}'})."


FIXED, RESULT, EXECUTION = Role.FIXED, Role.RESULT, Role.EXECUTION
_flag(None, None, "enum", "method", methods.DEFAULT, list(methods.METHODS), "Training method: " + "; ".join(
      f"{name} ({method.title})" for name, method in methods.METHODS.items()) + ".")
# Data.
_flag("dataset", FIXED, "string", "dataset", "cifar100", f"Dataset: {', '.join(DATASETS)}, or the name of any "
      "tensorflow-datasets image-classification dataset (an `image` and a `label` feature, e.g. tf_flowers). "
      "`digits` is bundled with scikit-learn and needs no network; `image_folder` reads "
      "--data_dir/<split>/<class>/<image>.")
_flag("dataset", FIXED, "string", "data_dir", None, "tensorflow-datasets data directory (prepared or manually "
      "downloaded data), or the image folder for --dataset=image_folder. Default: tfds's default data dir.")
_flag("dataset", FIXED, "integer", "image_size", None, "image_folder and imagenet2012: resize images to this square "
      "size (default: the first image's size; 224 for ImageNet).", lower_bound=8)
_flag("dataset", FIXED, "float", "validation_fraction", 0.2, "image_folder (and tfds datasets) without an evaluation "
      "split: fraction of train/ held out for evaluation (chosen by --split_seed).", lower_bound=0.01,
      upper_bound=0.9)
_flag("dataset", FIXED, "integer", "split_seed", 0, "Seed of the --validation_fraction hold-out. It is not --seed, "
      "so runs with different seeds evaluate on the same images.", lower_bound=0)
_flag("dataset", FIXED, "bool", "skip_bad_images", False, "image_folder: train without undecodable image files and "
      "empty class folders (with a warning) instead of stopping before training with their names.")
_flag(None, None, "bool", "download", True, "Let tensorflow-datasets download and prepare a missing dataset. Without "
      "network the run stops within seconds, saying how to prepare the data offline.")
# Model.
_flag("model", FIXED, "list", "backbones", ["resnet32", "resnet32"], "One backbone per branch, comma-separated: "
      f"{', '.join(BACKBONES)}; keras:<keras.applications constructor> (e.g. keras:MobileNetV3Small, with its own "
      "preprocessing); or package.module:function, a zero-argument function returning a keras.Model that maps "
      "images to a 4-D feature map (or an ffl_tf Backbone). Different networks need --shared_stages=0.")
_flag("model", FIXED, "enum", "pretrained", "none", ["none", "imagenet"], "imagenet: load keras.applications "
      "branches' ImageNet weights (from the Keras cache, $KERAS_HOME/models, or downloaded when there is network).")
_flag("model", FIXED, "integer", "shared_stages", None, "Stages shared by all branches (with the stem): 0 = "
      f"independent networks (required for different backbones). {_method_default('shared_stages')}", lower_bound=0)
_flag("model", FIXED, "integer", "fusion_channels", None, "ffl: output channels of the fusion module's pointwise "
      "conv (default: the first branch's feature-map channels).", lower_bound=1)
_flag("model", FIXED, "bool", "sync_batchnorm", False, "Batch-norm statistics over the global batch across "
      "replicas (exactly single-device behaviour; one all-reduce per BN layer).")
# Distillation.
_flag("loss", RESULT, "float", "temperature", None, f"Distillation temperature T. {_method_default('temperature')}",
      lower_bound=1e-3)
_flag("loss", RESULT, "bool", "distill_to_fused", None, "ffl: keep the ensemble -> fused distillation term (false: "
      "the paper's ablation without it). Default: true.")
_flag("loss", RESULT, "bool", "distill_to_branches", None, "ffl: keep the fused -> branches distillation term "
      "(false: the paper's ablation without it). Default: true.")
_flag("training", RESULT, "float", "rampup_epochs", None, "Epochs over which the KD weight ramps up to 1 (scale it "
      f"with --epochs; 0 = no ramp-up). {_method_default('rampup_epochs')}", lower_bound=0.0)
# Optimisation (defaults: the official CIFAR-100 recipe).
_flag("training", RESULT, "integer", "epochs", 300, "Training epochs.", lower_bound=1)
_flag("training", FIXED, "integer", "steps_per_epoch", None, "Cap on training steps per epoch (default: one pass "
      "over the training split).", lower_bound=1)
_flag("training", FIXED, "integer", "batch_size", 128, "Global training batch size (split across replicas; a "
      "multiple of their number).", lower_bound=1)
_flag("training", RESULT, "float", "learning_rate", 0.1, "SGD learning rate at --lr_base_batch_size images per "
      "step; scaled linearly with --batch_size.", lower_bound=0.0)
_flag("training", RESULT, "integer", "lr_base_batch_size", 128, "Batch size at which --learning_rate applies.",
      lower_bound=1)
_flag("training", RESULT, "list", "lr_decay_epochs", ["150", "225"], "Epochs at which the learning rate is "
      "multiplied by --lr_decay_factor.")
_flag("training", RESULT, "float", "lr_decay_factor", 0.1, "Step-decay factor.", lower_bound=0.0, upper_bound=1.0)
_flag("training", RESULT, "float", "momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
_flag("training", RESULT, "bool", "nesterov", None, f"Nesterov momentum. {_method_default('nesterov')}")
_flag("training", RESULT, "float", "weight_decay", None, "L2 weight decay of the networks (PyTorch SGD convention). "
      f"{_method_default('weight_decay')}", lower_bound=0.0)
_flag("training", RESULT, "float", "fusion_weight_decay", None, "ffl: L2 weight decay of the fusion module. "
      f"{_method_default('fusion_weight_decay')}", lower_bound=0.0)
_flag("training", FIXED, "enum", "mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
      "Keras dtype policy; logits, losses and variables stay float32, mixed_float16 scales the loss.")
_flag("training", FIXED, "integer", "seed", 0, "Seed for weights, data order and augmentation.")
_flag("training", RESULT, "integer", "eval_every", 1, "Evaluate on the evaluation split every N epochs.",
      lower_bound=1)
# Execution.
_flag("execution", EXECUTION, "enum", "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute "
      "strategy: one device, all local GPUs, or several machines configured by the TF_CONFIG environment variable.")
_flag("execution", EXECUTION, "bool", "jit_compile", False, "Compile the train step with XLA.")
_flag("execution", EXECUTION, "integer", "eval_batch_size", 500, "Global evaluation batch size (a multiple of the "
      "number of replicas).", lower_bound=1)
_flag("execution", EXECUTION, "integer", "checkpoint_every", 1, "Save a checkpoint every N epochs (and after the "
      "last).", lower_bound=1)
_flag("execution", EXECUTION, "integer", "checkpoint_every_steps", 0, "Also save a checkpoint every N steps within "
      "an epoch (0 = only at epoch ends); SIGTERM/SIGINT always save one at the next step.", lower_bound=0)
_flag("execution", EXECUTION, "integer", "keep_checkpoints", 3, "How many recent checkpoints to keep.", lower_bound=1)
_flag(None, None, "string", "model_dir", None, "Run directory: checkpoints, logs, flags, results.json. Rerunning "
      "with the same directory resumes. Default: runs/<dataset>-<backbones> (with -<method> for methods other than "
      f"{methods.DEFAULT}).")
_flag(None, None, "enum", "verbose", "auto", ["auto", "0", "1", "2"], "Keras fit verbosity: 1 = progress bar, 2 = "
      "one line per epoch, auto = 1 in a terminal, else 2 (logs redirected to a file).")


def defaults() -> dict[str, Any]:
    """Every setting's flag default (None for a method's own)."""
    return {name: flag.default for name, flag in SETTINGS.items()}


def uses(method: methods.Method, name: str) -> bool:
    """Whether setting `name` applies to `method`: every setting but those of other methods' own."""
    return name not in METHOD_SETTINGS or METHOD_SETTINGS[name] is not None or name in (
        *method.defaults, *method.build_settings, *method.loss_settings, *method.module_weight_decay.values())


def resolve(values: dict) -> dict:
    """The method and every setting that applies to it, each unset one (None) filled in with the method's
    default (or `METHOD_SETTINGS`' fallback): the one place where "unset" becomes a value."""
    method = methods.get(values["method"])
    resolved = {"method": method.name}
    for name in SETTINGS:
        if uses(method, name):
            value = values.get(name)
            resolved[name] = method.defaults.get(name, METHOD_SETTINGS.get(name)) if value is None else value
    resolved["lr_decay_epochs"] = [int(e) for e in resolved["lr_decay_epochs"]]
    if resolved.get("data_dir"):  # the same data from any working directory
        resolved["data_dir"] = os.path.abspath(resolved["data_dir"])
    return resolved

