"""Head names: the named logits a model outputs, and what a run reports beside them.

A head is a named output of logits: `branch_<k>` (one sub-network), `ensemble` (the branches combined:
their mean, or ONE's gated sum), and heads of a method's own (FFL's `fused`). Which heads a model has is
its method's declaration (`Method.heads`). `branch_mean` is reported beside them: the mean of the
branches' accuracies (the paper's "FFL-S").
"""

BRANCH_PREFIX = "branch_"
ENSEMBLE = "ensemble"
FUSED = "fused"
BRANCH_MEAN = "branch_mean"


def branch(k: int) -> str:
    """The name of branch k's head (and of its sub-model)."""
    return f"{BRANCH_PREFIX}{k}"


def branch_index(head: str) -> int | None:
    """k for `branch_<k>`, None for any other head."""
    suffix = head.removeprefix(BRANCH_PREFIX)
    return int(suffix) if head.startswith(BRANCH_PREFIX) and suffix.isdigit() else None


def reported(names) -> list[str]:
    """The heads whose accuracy a run reports: the branches, `branch_mean`, then the model's other heads."""
    branches = branch_heads(names)
    return [*branches, BRANCH_MEAN, *(name for name in names if name not in branches)]


def branch_heads(names) -> list[str]:
    """The `branch_<k>` names among `names`, in order."""
    return [name for name in names if branch_index(name) is not None]
