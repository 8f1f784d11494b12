"""The stable import path of the losses, `ffl_tf.losses.ffl_loss(...)` and the rest: they live in
`ffl_tf.model.losses` (with the model they train), and both paths name the same functions."""

from ffl_tf.model.losses import (
    FFL_PARTS,
    batch_mean,
    cross_entropy,
    ensemble_logits,
    ffl_loss,
    kl_divergence,
    l2_penalty,
    rampup_weight,
)

__all__ = ["FFL_PARTS", "batch_mean", "cross_entropy", "ensemble_logits", "ffl_loss", "kl_divergence", "l2_penalty",
           "rampup_weight"]
