"""Head names: the one place that says which logits a model of each method outputs and reports.

A head is a named output of logits: `branch_<k>` (one sub-network), `ensemble` (the branches combined:
their mean, or ONE's gated sum) and `fused` (FFL's fused classifier). `branch_mean` is reported beside
them: the mean of the branches' accuracies (the paper's "FFL-S").
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


def model_heads(method: str, num_branches: int) -> list[str]:
    """The heads a model of `method` outputs: each branch, the ensemble of several, FFL's fused classifier."""
    names = [branch(k) for k in range(num_branches)]
    if num_branches > 1:
        names.append(ENSEMBLE)
    if method == "ffl":
        names.append(FUSED)
    return names


def reported_heads(method: str, num_branches: int) -> list[str]:
    """The heads whose accuracy a run reports: the branches, `branch_mean`, then the ensemble and fused heads."""
    names = model_heads(method, num_branches)
    return [*names[:num_branches], BRANCH_MEAN, *names[num_branches:]]


def branch_heads(names) -> list[str]:
    """The `branch_<k>` names among `names`, in order."""
    return [name for name in names if branch_index(name) is not None]
