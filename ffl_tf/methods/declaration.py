"""`Method`: everything the library knows about a training method, declared once, in the method's own module.

Training, comparisons, reports, exports and run directories read a method's declaration and never test its
name: a new method is one module declaring a `Method` plus its line in `ffl_tf.methods.METHODS`.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ffl_tf.model import heads as head_names

# The arguments of `loss` that the train step supplies; everything else it takes is a setting of the run.
STEP_ARGUMENTS = ("logits", "labels", "kd_weight", "sample_weight")


@dataclasses.dataclass(frozen=True)
class Method:
    """A training method: its reference settings, how it builds, validates and trains a model, what it reports.

    Attributes:
        name: the registry name (`--method=<name>`).
        title: one line naming the method and its paper, for `--help` and reports.
        defaults: the settings of its own, as its reference code sets them (e.g. temperature, rampup_epochs,
            nesterov, shared_stages); a run that leaves such a flag unset takes the value here.
        validate: `validate(backbones, shared_stages)` raises ValueError, naming the fix, for a layout the
            method cannot build.
        build: `build(backbones, num_classes, image_shape, *, shared_stages, mean, std, sync_batchnorm,
            pretrained, **build_settings)` -> a `DistillationModel` whose outputs are `heads(K)`.
        loss: `loss(logits, labels, *, kd_weight, sample_weight=None, **loss_settings)` -> (total, parts),
            a pure function of tensors.
        heads: `heads(K)`: the heads (named logits) its model outputs with K branches.
        headline: `headline(K)`: the head its paper reports.
        build_settings: the settings `build` takes beyond the ones every method takes.
        loss_settings: the settings `loss` takes.
        module_weight_decay: {layer name: setting}: top-level layers whose weights take their own L2
            coefficient (FFL's fusion module takes `fusion_weight_decay`); every other weight takes
            `weight_decay`.
        comparison_settings: settings of its own that a comparison's plain flags set for it (e.g. ramp-up
            and trunk sharing, which follow the comparison's schedule and backbones); the others keep its
            `defaults` unless the comparison's `--method_settings` names them.
        comparison_branches: how many branches it has in a comparison (the comparison's first backbone
            repeated), or None for the comparison's `--backbones` as given.
    """

    name: str
    title: str
    defaults: Mapping[str, Any]
    validate: Callable[..., None]
    build: Callable[..., Any]
    loss: Callable[..., tuple]
    heads: Callable[[int], list[str]]
    headline: Callable[[int], str]
    build_settings: tuple[str, ...] = ()
    loss_settings: tuple[str, ...] = ()
    module_weight_decay: Mapping[str, str] = dataclasses.field(default_factory=dict)
    comparison_settings: tuple[str, ...] = ()
    comparison_branches: int | None = None

    def loss_fn(self, **settings) -> Callable[..., tuple]:
        """`loss` with its settings bound: `settings` over the method's `defaults` (e.g. `temperature=4.0`)."""
        unknown = sorted(set(settings) - set(self.loss_settings))
        if unknown:
            raise ValueError(f"Received: {', '.join(unknown)}; the {self.name} loss takes "
                             f"{', '.join(self.loss_settings) or 'no settings'}.")
        bound = {name: settings.get(name, self.defaults.get(name)) for name in self.loss_settings}
        return functools.partial(self.loss, **bound)

    def reported_heads(self, num_branches: int) -> list[str]:
        """The heads a run reports: each branch, `branch_mean` (the mean of their accuracies), then the others."""
        return head_names.reported(self.heads(num_branches))


def branches_and_ensemble(num_branches: int) -> list[str]:
    """`branch_<k>` for each branch, and `ensemble` when there are several: the heads most methods output."""
    return [*map(head_names.branch, range(num_branches)), *([head_names.ENSEMBLE] if num_branches > 1 else [])]


def constant(head: str) -> Callable[[int], str]:
    """A headline head that does not depend on the number of branches."""
    return lambda num_branches: head


def branch_logits(logits: Mapping, names: Sequence[str] | None = None) -> list:
    """The `branch_<k>` logits of a model's outputs, in order."""
    return [logits[name] for name in head_names.branch_heads(names or logits)]
