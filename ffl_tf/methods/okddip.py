"""OKDDip (Chen, Mei, Wang, Feng, Chen, AAAI 2020, "Online Knowledge Distillation with Diverse Peers").

A shared trunk (stem and stages 1-2 in the official code) and m + 1 branches: m auxiliary peers and a group
leader, the last branch, which is the model kept for inference. Each peer i gets a target of its own, an
attention-weighted sum of the peers' logits: its pooled features go through two shared bias-free projections
(query and key, C -> C / 8), a_ij = softmax_j(q_i . k_j) over the peers (i included), t_i = sum_j a_ij z_j.
The leader learns from the peers' mean:

    L = sum_i CE(z_i) + CE(z_leader) + w(e) [ sum_i KL_T(t_i -> z_i) + KL_T(mean_i z_i -> z_leader) ]

with T = 3, the sigmoid ramp-up w(e) over 80 epochs, Nesterov SGD and weight decay 5e-4, as in the official
code (DefangChen/OKDDip: models/model_cifar/resnet_GL.py, train_GL.py). Its KL loss does not detach the
teacher: the gradient flows through t_i into the peers' logits and into the attention (the projections learn
only this way) and through the peers' mean into the peers. So does this module's KL (`kl_through_teacher`);
the official code adds 1e-7 to the teacher's probabilities, which this KL leaves out.

Heads: `branch_<k>` for every branch (the leader is the last, its headline head), `ensemble` (the mean of the
peers' logits, as the official code evaluates it) and `target_<i>`, peer i's attention-weighted target.
"""

from collections.abc import Sequence

import keras
from keras import ops

from ffl_tf.backbones import BranchSpec, layers
from ffl_tf.methods.declaration import Method
from ffl_tf.model import heads
from ffl_tf.model.branches import build_branches, image_input, mean_ensemble, validate_branches
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.model.losses import batch_mean, cross_entropy

# The official code's settings: T = 3, ramp-up over 80 epochs, Nesterov SGD, weight decay 5e-4, the stem and
# stages 1-2 shared.
DEFAULTS = {"temperature": 3.0, "rampup_epochs": 80.0, "nesterov": True, "shared_stages": 2, "weight_decay": 5e-4}
# The projections map C pooled channels to C // PROJECTION_FACTOR (64 -> 8 for the CIFAR ResNets).
PROJECTION_FACTOR = 8
TARGET_PREFIX = "target_"


def target(i: int) -> str:
    """The head of peer i's attention-weighted target t_i."""
    return f"{TARGET_PREFIX}{i}"


def validate(backbones: Sequence[BranchSpec], shared_stages: int) -> None:
    """Raises ValueError, naming the fix, unless there are 2 or more peers and a leader on a shared trunk."""
    if shared_stages < 1:
        raise ValueError(f"OKDDip's peers and leader share a trunk: use shared_stages >= 1, got {shared_stages}.")
    validate_branches(backbones, shared_stages, min_branches=3)


@keras.saving.register_keras_serializable(package="ffl_tf", name="PeerAttention")
class PeerAttention(keras.layers.Layer):
    """[F_1..F_m (the peers' last feature maps), z_1..z_m (their logits)] -> [t_1..t_m], the peers' targets
    t_i = sum_j softmax_j(q_i . k_j) z_j, with q_i = W_q pool(F_i) and k_j = W_k pool(F_j) (bias-free, shared).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.query = keras.layers.Dense(self.units, use_bias=False, name="query",
                                        **layers.dense_initializers(channels, use_bias=False))
        self.key = keras.layers.Dense(self.units, use_bias=False, name="key",
                                      **layers.dense_initializers(channels, use_bias=False))
        self.query.build((None, None, channels))
        self.key.build((None, None, channels))

    def call(self, inputs):
        peers = len(inputs) // 2
        features = ops.stack([ops.mean(f, axis=(1, 2)) for f in inputs[:peers]], axis=1)  # [batch, m, C]
        logits = ops.stack(inputs[peers:], axis=1)  # [batch, m, classes]
        energy = ops.matmul(self.query(features), ops.transpose(self.key(features), (0, 2, 1)))
        targets = ops.matmul(ops.softmax(ops.cast(energy, "float32"), axis=-1), ops.cast(logits, "float32"))
        return ops.unstack(targets, num=peers, axis=1)

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in input_shape[len(input_shape) // 2:]]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build(
    backbones: Sequence[BranchSpec],
    num_classes: int,
    image_shape: Sequence[int],
    *,
    shared_stages: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (255.0,),
    sync_batchnorm: bool = False,
    pretrained: str | None = None,
) -> DistillationModel:
    """m = K - 1 peers and a leader (the last branch) on a shared trunk, and the peers' attention."""
    validate(backbones, shared_stages)
    images, x = image_input(image_shape, mean, std)
    _, branches = build_branches(images, x, backbones, num_classes=num_classes, shared_stages=shared_stages,
                                 sync_batchnorm=sync_batchnorm, pretrained=pretrained)
    outputs = {heads.branch(k): b["logits"] for k, b in enumerate(branches)}
    peers = branches[:-1]
    outputs[heads.ENSEMBLE] = mean_ensemble([b["logits"] for b in peers])
    channels = int(peers[0]["features"].shape[-1])
    targets = PeerAttention(max(1, channels // PROJECTION_FACTOR), dtype="float32", name="attention")(
        [*(b["features"] for b in peers), *(b["logits"] for b in peers)])
    outputs.update({target(i): t for i, t in enumerate(targets)})
    return DistillationModel(images, outputs, name="okddip")


def kl_through_teacher(teacher_logits, student_logits, temperature: float, sample_weight=None):
    """KL_T(t -> s) = T^2 * batch mean of KL(softmax(t/T) || softmax(s/T)), the teacher NOT stopped (as OKDDip)."""
    log_q = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    return temperature**2 * batch_mean(ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1), sample_weight)


def okddip_loss(peer_logits: Sequence, leader_logits, targets: Sequence, labels, *, temperature: float, kd_weight,
                sample_weight=None) -> tuple:
    """OKDDip's loss and its parts `ce_branches` (peers and leader), `kd_peers` and `kd_leader`."""
    peers_mean = ops.mean(ops.stack(peer_logits), axis=0)
    parts = {
        "ce_branches": sum(cross_entropy(z, labels, sample_weight) for z in [*peer_logits, leader_logits]),
        "kd_peers": sum(kl_through_teacher(t, z, temperature, sample_weight) for t, z in zip(targets, peer_logits)),
        "kd_leader": kl_through_teacher(peers_mean, leader_logits, temperature, sample_weight),
    }
    return parts["ce_branches"] + kd_weight * (parts["kd_peers"] + parts["kd_leader"]), parts


def loss(logits: dict, labels, *, kd_weight, temperature: float, sample_weight=None) -> tuple:
    """`okddip_loss` on a model's heads: the last branch is the leader, the others its peers."""
    *peers, leader = [logits[name] for name in heads.branch_heads(logits)]
    targets = [logits[target(i)] for i in range(len(peers))]
    return okddip_loss(peers, leader, targets, labels, temperature=temperature, kd_weight=kd_weight,
                       sample_weight=sample_weight)


def _heads(num_branches: int) -> list[str]:
    return [*map(heads.branch, range(num_branches)), heads.ENSEMBLE, *map(target, range(num_branches - 1))]


METHOD = Method(
    name="okddip",
    title="OKDDip: online distillation with diverse peers (Chen, Mei, Wang, Feng, Chen, AAAI 2020)",
    defaults=DEFAULTS,
    validate=validate,
    build=build,
    loss=loss,
    heads=_heads,
    headline=lambda num_branches: heads.branch(num_branches - 1),
    loss_settings=("temperature",),
    comparison_settings=("shared_stages", "rampup_epochs", "weight_decay"),
    comparison_branches=4,
)
