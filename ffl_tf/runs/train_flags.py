"""The training flags (`python -m ffl_tf.train --help`), defined from their declarations in `ffl_tf.runs.settings`,
and the checks absl runs on them before any work.

Importing this module defines the flags in absl's global FLAGS: only the commands that take them (train,
compare, the benchmarks that train) import it.
"""

import os

from absl import flags

from ffl_tf import backbones, methods
from ffl_tf.backbones import keras_apps
from ffl_tf.runs import settings
from ffl_tf.runs.settings import METHOD_SETTINGS, SETTINGS, uses

FLAGS = flags.FLAGS

for _declared in settings.FLAGS.values():
    getattr(flags, f"DEFINE_{_declared.kind}")(_declared.name, _declared.default, *_declared.args, **_declared.kwargs)


def flag_values() -> dict:
    """The method and every setting as the command line gave them (None where left to the method)."""
    return {"method": FLAGS.method, **{name: FLAGS[name].value for name in SETTINGS}}


@flags.multi_flags_validator(["method", "backbones", "shared_stages"], message="")
def _check_branches(values: dict) -> bool:
    try:
        for spec in values["backbones"]:
            backbones.check_spec(spec)
    except backbones.BackboneError as error:
        raise flags.ValidationError(f"--backbones: {error}") from None
    method = methods.get(values["method"])
    shared = method.defaults.get("shared_stages", 0) if values["shared_stages"] is None else values["shared_stages"]
    try:
        method.validate(values["backbones"], shared)
    except ValueError as error:
        raise flags.ValidationError(f"--method={values['method']} --backbones/--shared_stages: {error}") from None
    return True


@flags.multi_flags_validator(["method", *METHOD_SETTINGS], message="")
def _check_applicable(values: dict) -> bool:
    """Refuses a setting the method does not use (e.g. --fusion_channels with --method=dml) instead of ignoring it."""
    method = methods.get(values["method"])
    ignored = [f"--{name}" for name, value in values.items()
               if name != "method" and value is not None and not uses(method, name)]
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
