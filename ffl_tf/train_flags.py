"""The training flags, each declared once with its default and help, and the run config built from them.

Every flag belongs to a section of config.json (`model`, `dataset`, `loss`, `training`) or to none (how
this process runs: `model_dir`, `download`, `verbose`). `config_from_flags` copies each section
generically; a flag left at None takes the method's own default (`ffl_tf/methods/<method>.py`, DEFAULTS).
A setting then reaches its use in two steps, e.g. --temperature -> config["loss"] -> the method's loss.
"""

import os

from absl import flags

from ffl_tf import methods, models, run_dir
from ffl_tf.data import DATASETS, DatasetInfo
from ffl_tf.models import BACKBONES, keras_apps

FLAGS = flags.FLAGS
SECTIONS: dict[str, list[str]] = {"model": [], "dataset": [], "loss": [], "training": []}


def _flag(section: str | None, kind: str, name: str, default, *args, **kwargs) -> None:
    """Defines flag `name` with absl's DEFINE_<kind>(name, default, *args) and files it under `section`."""
    getattr(flags, f"DEFINE_{kind}")(name, default, *args, **kwargs)
    if section:
        SECTIONS[section].append(name)


def _method_default(name: str) -> str:
    values = ", ".join(f"{m} {method.DEFAULTS[name]}" for m, method in methods.METHODS.items()
                       if name in method.DEFAULTS)
    return f"Default: the method's ({values})."


_flag(None, "enum", "method", "ffl", list(methods.METHODS), "Training method: ffl (feature fusion learning), dml "
      "(deep mutual learning), one (on-the-fly native ensemble) or vanilla (each network trained alone).")
# Data.
_flag("dataset", "string", "dataset", "cifar100", f"Dataset: {', '.join(DATASETS)}, or the name of any "
      "tensorflow-datasets image-classification dataset (an `image` and a `label` feature, e.g. tf_flowers). "
      "`digits` is bundled with scikit-learn and needs no network; `image_folder` reads "
      "--data_dir/<split>/<class>/<image>.")
_flag("dataset", "string", "data_dir", None, "tensorflow-datasets data directory (prepared or manually "
      "downloaded data), or the image folder for --dataset=image_folder. Default: tfds's default data dir.")
_flag("dataset", "integer", "image_size", None, "image_folder and imagenet2012: resize images to this square "
      "size (default: the first image's size; 224 for ImageNet).", lower_bound=8)
_flag("dataset", "float", "validation_fraction", 0.2, "image_folder without a test/ split: fraction of train/ "
      "held out for evaluation (fixed by --seed).", lower_bound=0.01, upper_bound=0.9)
_flag("dataset", "bool", "skip_bad_images", False, "image_folder: train without undecodable image files and "
      "empty class folders (with a warning) instead of stopping before training with their names.")
_flag(None, "bool", "download", True, "Let tensorflow-datasets download and prepare a missing dataset. Without "
      "network the run stops within seconds, saying how to prepare the data offline.")
# Model.
_flag("model", "list", "backbones", ["resnet32", "resnet32"], "One backbone per branch, comma-separated: "
      f"{', '.join(BACKBONES)}; keras:<keras.applications constructor> (e.g. keras:MobileNetV3Small, with its own "
      "preprocessing); or package.module:function, a zero-argument function returning a keras.Model that maps "
      "images to a 4-D feature map (or an ffl_tf Backbone). Different networks need --shared_stages=0.")
_flag("model", "enum", "pretrained", "none", ["none", "imagenet"], "imagenet: load keras.applications branches' "
      "ImageNet weights (from the Keras cache, $KERAS_HOME/models, or downloaded when there is network).")
_flag("model", "integer", "shared_stages", None, "Stages shared by all branches (with the stem): 0 = "
      f"independent networks (required for different backbones). {_method_default('shared_stages')}", lower_bound=0)
_flag("model", "integer", "fusion_channels", None, "ffl: output channels of the fusion module's pointwise conv "
      "(default: the first branch's feature-map channels).", lower_bound=1)
_flag("model", "bool", "sync_batchnorm", False, "Batch-norm statistics over the global batch across replicas "
      "(exactly single-device behaviour; one all-reduce per BN layer).")
# Distillation.
_flag("loss", "float", "temperature", None, f"Distillation temperature T. {_method_default('temperature')}",
      lower_bound=1e-3)
_flag("loss", "bool", "distill_to_fused", None, "ffl: keep the ensemble -> fused distillation term (false: the "
      "paper's ablation without it). Default: true.")
_flag("loss", "bool", "distill_to_branches", None, "ffl: keep the fused -> branches distillation term (false: "
      "the paper's ablation without it). Default: true.")
_flag("training", "float", "rampup_epochs", None, "Epochs over which the KD weight ramps up to 1 (scale it with "
      f"--epochs; 0 = no ramp-up). {_method_default('rampup_epochs')}", lower_bound=0.0)
# Optimisation (defaults: the official CIFAR-100 recipe).
_flag("training", "integer", "epochs", 300, "Training epochs.", lower_bound=1)
_flag("training", "integer", "steps_per_epoch", None, "Cap on training steps per epoch (default: one pass over "
      "the training split).", lower_bound=1)
_flag("training", "integer", "batch_size", 128, "Global training batch size (split across replicas; a multiple "
      "of their number).", lower_bound=1)
_flag("training", "integer", "eval_batch_size", 500, "Global evaluation batch size (a multiple of the number of "
      "replicas).", lower_bound=1)
_flag("training", "float", "learning_rate", 0.1, "SGD learning rate at --lr_base_batch_size images per step; "
      "scaled linearly with --batch_size.", lower_bound=0.0)
_flag("training", "integer", "lr_base_batch_size", 128, "Batch size at which --learning_rate applies.", lower_bound=1)
_flag("training", "list", "lr_decay_epochs", ["150", "225"], "Epochs at which the learning rate is multiplied "
      "by --lr_decay_factor.")
_flag("training", "float", "lr_decay_factor", 0.1, "Step-decay factor.", lower_bound=0.0, upper_bound=1.0)
_flag("training", "float", "momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
_flag("training", "bool", "nesterov", None, f"Nesterov momentum. {_method_default('nesterov')}")
_flag("training", "float", "weight_decay", 1e-4, "L2 weight decay of the networks (PyTorch SGD convention).",
      lower_bound=0.0)
_flag("training", "float", "fusion_weight_decay", 1e-5, "ffl: L2 weight decay of the fusion module.", lower_bound=0.0)
# Execution.
_flag("training", "enum", "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy: "
      "one device, all local GPUs, or several machines configured by the TF_CONFIG environment variable.")
_flag("training", "enum", "mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
      "Keras dtype policy; logits, losses and variables stay float32, mixed_float16 scales the loss.")
_flag("training", "bool", "jit_compile", False, "Compile the train step with XLA.")
_flag("training", "integer", "seed", 0, "Seed for weights, data order, augmentation and the hold-out split.")
_flag(None, "string", "model_dir", None, "Run directory: checkpoints, logs, flags, results.json. Rerunning with "
      "the same directory resumes. Default: runs/<dataset>-<backbones> (with -<method> for other methods).")
_flag("training", "integer", "checkpoint_every", 1, "Save a checkpoint every N epochs (and after the last).",
      lower_bound=1)
_flag("training", "integer", "checkpoint_every_steps", 0, "Also save a checkpoint every N steps within an epoch "
      "(0 = only at epoch ends); SIGTERM/SIGINT always save one at the next step.", lower_bound=0)
_flag("training", "integer", "keep_checkpoints", 3, "How many recent checkpoints to keep.", lower_bound=1)
_flag("training", "integer", "eval_every", 1, "Evaluate on the evaluation split every N epochs.", lower_bound=1)
_flag(None, "enum", "verbose", "auto", ["auto", "0", "1", "2"], "Keras fit verbosity: 1 = progress bar, 2 = one "
      "line per epoch, auto = 1 in a terminal, else 2 (logs redirected to a file).")


def resolved(name: str):
    """The flag's value, or the method's default when the flag is left at None."""
    value = FLAGS[name].value
    return methods.get(FLAGS.method).DEFAULTS.get(name) if value is None else value


def config_from_flags(info: DatasetInfo) -> dict:
    """Everything the run depends on, as plain values; model and loss keep what the method takes."""
    method = methods.get(FLAGS.method)
    config = {"model_version": run_dir.MODEL_VERSION, "method": FLAGS.method, "class_names": list(info.class_names)}
    config.update({section: {name: resolved(name) for name in names} for section, names in SECTIONS.items()})
    config["model"] = {
        key: value for key, value in {
            **config["model"], "num_classes": info.num_classes, "image_shape": list(info.image_shape),
            "mean": list(info.mean), "std": list(info.std),
        }.items() if key in ("backbones", "num_classes", "image_shape", *methods.settings(method.build))
    }
    config["loss"] = {key: config["loss"][key] for key in methods.settings(method.loss)}
    config["dataset"]["data_dir"] = FLAGS.data_dir and os.path.abspath(FLAGS.data_dir)
    config["training"]["lr_decay_epochs"] = [int(e) for e in FLAGS.lr_decay_epochs]
    return config


@flags.multi_flags_validator(["method", "backbones", "shared_stages"], message="")
def _check_branches(values: dict) -> bool:
    try:
        for spec in values["backbones"]:
            models.check_spec(spec)
    except models.BackboneError as error:
        raise flags.ValidationError(f"--backbones: {error}") from None
    method = methods.get(values["method"])
    shared = method.DEFAULTS["shared_stages"] if values["shared_stages"] is None else values["shared_stages"]
    try:
        method.validate(values["backbones"], shared)
    except ValueError as error:
        raise flags.ValidationError(f"--method={values['method']} --backbones/--shared_stages: {error}") from None
    return True


@flags.multi_flags_validator(["method", *SECTIONS["model"], *SECTIONS["loss"]], message="")
def _check_applicable(values: dict) -> bool:
    """Refuses a setting the method does not use (e.g. --fusion_channels with --method=dml) instead of ignoring it."""
    method = methods.get(values["method"])
    used = {"backbones", *methods.settings(method.build), *methods.settings(method.loss)}
    ignored = [f"--{name}" for name, value in values.items() if name != "method" and name not in used
               and value is not None and FLAGS[name].default != value]
    if ignored:
        raise flags.ValidationError(f"{', '.join(ignored)} do(es) not apply to --method={values['method']}; remove it.")
    return True


@flags.multi_flags_validator(["backbones", "pretrained"], message="")
def _check_pretrained(values: dict) -> bool:
    if values["pretrained"] != "none" and not any(b.startswith(keras_apps.PREFIX) for b in values["backbones"]):
        raise flags.ValidationError(
            f"--pretrained={values['pretrained']} loads weights into keras:<application> branches only, and "
            f"--backbones={','.join(values['backbones'])} has none; remove --pretrained or use such a branch."
        )
    return True


@flags.multi_flags_validator(["lr_decay_epochs"], message="")
def _check_decay_epochs(values: dict) -> bool:
    try:
        epochs = [int(e) for e in values["lr_decay_epochs"]]
    except ValueError:
        raise flags.ValidationError(
            f"--lr_decay_epochs={','.join(values['lr_decay_epochs'])}: use comma-separated whole epochs, e.g. 150,225."
        ) from None
    if epochs != sorted(set(epochs)) or any(e <= 0 for e in epochs):
        raise flags.ValidationError(f"--lr_decay_epochs={epochs}: epochs must be positive and increasing.")
    return True


@flags.multi_flags_validator(["dataset", "data_dir"], message="")
def _check_data_dir(values: dict) -> bool:
    if values["dataset"] == "image_folder" and not values["data_dir"]:
        raise flags.ValidationError("--dataset=image_folder needs --data_dir=DIR with DIR/train/<class>/<image>.")
    if values["data_dir"] and values["dataset"] != "digits" and not os.path.isdir(values["data_dir"]):
        raise flags.ValidationError(f"--data_dir={values['data_dir']} is not a directory.")
    return True


@flags.multi_flags_validator(["strategy"], message="")
def _check_tf_config(values: dict) -> bool:
    if values["strategy"] == "multi_worker" and "TF_CONFIG" not in os.environ:
        raise flags.ValidationError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable describing the cluster and this "
            "worker (see README, 'Several machines')."
        )
    return True
