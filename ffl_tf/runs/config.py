"""A run's configuration: one typed object, resolved once from the flags, saved as RUN/config.json and read back
by every command (train and its resume, compare, evaluate, predict, gradcam, the exports).

    config = RunConfig.from_settings(settings.resolve(train_flags.flag_values()), source.info)
    config.model     # the method's build() arguments: backbones, num_classes, image_shape, mean, std, ...
    config.loss      # the method's loss settings, e.g. {"temperature": 3.0}
    config.training  # optimisation and schedule; config.execution: how the run executes

How a setting reaches its use (at most three hand-offs; keep this true):
- `--temperature`: the flag -> `settings.resolve` (unset: the method's default) -> `RunConfig.loss` ->
  `Method.loss_fn(**config.loss)`, the loss `DistillationModel.compile` is given and calls every step.
- `--mixed_precision`: the flag -> `RunConfig.training["mixed_precision"]` -> `keras.mixed_precision.
  set_global_policy` in `ffl_tf.runs.training.train`, before the model is built.

Which settings change what a run computes is each flag's `Role` (`settings.SETTINGS`): `changes()` lists
the differences of two configs by role, for the resume check and for a comparison's reuse of finished runs.
"""

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ffl_tf import methods
from ffl_tf.data import DatasetInfo
from ffl_tf.runs import settings
from ffl_tf.runs.settings import Role

# config.json's format: 2 = networks padded like their PyTorch references; runs without it are version 1.
MODEL_VERSION = 2
# What the dataset decides about the model (not flags): part of `model`, compared on resume like FIXED settings.
DATA_FACTS = ("num_classes", "image_shape", "mean", "std")
SECTIONS = ("model", "dataset", "loss", "training", "execution")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on, as plain JSON values, in config.json's sections.

    Attributes:
        method: the method's registry name.
        model: the arguments of the method's `build` (backbones, the data's num_classes, image_shape, mean,
            std, and the build settings the method takes).
        dataset: the arguments of `data.open_source`.
        loss: the method's loss settings.
        training: optimisation, schedule, precision and seed.
        execution: how the run executes (strategy, checkpoints, evaluation batch).
        class_names: the dataset's class names, in label order.
        model_version: config.json's format.
    """

    method: str
    model: Mapping[str, Any]
    dataset: Mapping[str, Any]
    loss: Mapping[str, Any]
    training: Mapping[str, Any]
    execution: Mapping[str, Any]
    class_names: tuple[str, ...]
    model_version: int = MODEL_VERSION

    @classmethod
    def from_settings(cls, resolved: Mapping[str, Any], info: DatasetInfo) -> "RunConfig":
        """The config of resolved settings (`settings.resolve`) on the data `info` describes."""
        method = methods.get(resolved["method"])
        sections = {name: section(resolved, name) for name in SECTIONS}
        build = ("backbones", "shared_stages", "sync_batchnorm", "pretrained", *method.build_settings)
        sections["model"] = {
            **{name: sections["model"][name] for name in build if name in sections["model"]},
            "num_classes": info.num_classes, "image_shape": list(info.image_shape), "mean": list(info.mean),
            "std": list(info.std),
        }
        sections["loss"] = {name: sections["loss"][name] for name in method.loss_settings}
        return cls(method=method.name, class_names=tuple(info.class_names), **sections)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "RunConfig":
        """A config.json's content, including those written before settings had sections of their own (they
        are re-filed by today's sections; a missing `split_seed` is the run's seed, which chose the hold-out)."""
        method = methods.get(value.get("method", methods.DEFAULT))
        flat = {"method": method.name}
        for section in SECTIONS:
            flat.update(value.get(section, {}))
        flat.setdefault("split_seed", flat.get("seed", 0))
        facts = {name: flat.pop(name) for name in DATA_FACTS if name in flat}
        resolved = settings.resolve({**settings.defaults(), **flat})
        info = DatasetInfo(name=resolved["dataset"], num_classes=facts["num_classes"],
                           image_shape=tuple(facts["image_shape"]), mean=tuple(facts.get("mean", (0.0,))),
                           std=tuple(facts.get("std", (255.0,))), num_train=0, num_eval=0,
                           class_names=tuple(value.get("class_names") or map(str, range(facts["num_classes"]))))
        return dataclasses.replace(cls.from_settings(resolved, info), model_version=value.get("model_version", 1))

    def to_json(self) -> dict:
        return {"method": self.method, **{s: dict(getattr(self, s)) for s in SECTIONS},
                "class_names": list(self.class_names), "model_version": self.model_version}

    def settings(self) -> dict[str, Any]:
        """Every setting (flag) of the run and the method: what `settings.resolve` gave."""
        flat = {"method": self.method}
        for section in SECTIONS:
            flat.update(getattr(self, section))
        for name in DATA_FACTS:
            flat.pop(name, None)
        return flat

    def heads(self) -> list[str]:
        """The heads the run's model outputs (`Method.heads`)."""
        return methods.get(self.method).heads(len(self.model["backbones"]))

    def module_weight_decay(self) -> dict[str, float]:
        """{layer: L2 coefficient} of the modules with a weight decay of their own (`Method.module_weight_decay`)."""
        declared = methods.get(self.method).module_weight_decay
        return {layer: self.training[setting] for layer, setting in declared.items()}


def section(resolved: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The settings of config.json's section `name` among `resolved` (e.g. "dataset": `data.open_source`'s)."""
    return {key: value for key, value in resolved.items()
            if key in settings.SETTINGS and settings.SETTINGS[key].section == name}


def changes(old: Mapping[str, Any], new: Mapping[str, Any], roles: Iterable[Role]) -> list[tuple[str, Any, Any]]:
    """(name, old value, new value) of the settings with one of `roles` that differ between two settings dicts
    (`RunConfig.settings()`); the method counts as FIXED."""
    roles = set(roles)
    names = [name for name, setting in settings.SETTINGS.items() if setting.role in roles]
    names = (["method"] if Role.FIXED in roles else []) + names
    return [(name, old.get(name), new.get(name)) for name in names if old.get(name) != new.get(name)]


def describe(changed: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{name}: {old} -> {new}" for name, old, new in changed)


def read(path: str) -> RunConfig:
    """The RunConfig in a config.json file."""
    with open(path) as f:
        return RunConfig.from_json(json.load(f))
