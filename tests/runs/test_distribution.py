"""MirroredStrategy on two logical CPU devices trains and evaluates exactly like one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import data, methods
from ffl_tf.data import pipeline
from ffl_tf.data.source import DatasetInfo, Source
from ffl_tf.methods.ffl import build_ffl_model


def in_memory_source(images, labels) -> Source:
    """A Source over arrays: no augmentation, so the stream is the arrays in a seeded order."""
    info = DatasetInfo("arrays", 10, images.shape[1:], (0.0,), (255.0,), len(images), len(images),
                       tuple(map(str, range(10))))

    def read(num_pipelines, index, shuffle_seed):
        return data.source.shard(tf.data.Dataset.from_tensor_slices((images, labels)), num_pipelines, index)

    return Source(info, read, read, decode=tf.identity, train_fn=lambda x, seed: x, eval_fn=tf.identity, cache=True)


def train(strategy, initial_weights, train_source, eval_source):
    with strategy.scope():
        model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1, sync_batchnorm=True)
        model.set_weights(initial_weights)
        model.compile(
            keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True), distillation_loss=methods.loss_fn("ffl"),
            steps_per_epoch=1, rampup_epochs=2.0, weight_decay=1e-4, module_weight_decay={"fusion": 1e-5},
        )
    train_ds = pipeline.distribute_train(strategy, train_source, global_batch_size=16, seed=0)
    history = model.fit(train_ds, epochs=2, steps_per_epoch=1, verbose=0, shuffle=False)
    eval_ds, eval_steps = pipeline.distribute_eval(strategy, eval_source, global_batch_size=16)
    evaluation = model.evaluate(eval_ds, steps=eval_steps, verbose=0, return_dict=True)
    return model, model.get_weights(), history.history, evaluation


def test_two_replicas_match_one_device(two_cpu_replicas):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Two epochs of one step: momentum and per-epoch metrics are exercised, while float rounding (summing
    # two half batches instead of one batch) has no room to grow chaotically over many steps.
    train_source = in_memory_source(rng.integers(0, 256, (16, 16, 16, 3)).astype("uint8"),
                                    rng.integers(0, 10, 16).astype("int32"))
    initial = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1).get_weights()
    # Evaluation on 17 images in batches of 16: the second batch holds one real image and 15 of padding,
    # so without padding the second replica's share of it would be empty.
    eval_images = rng.integers(0, 256, (17, 16, 16, 3)).astype("uint8")
    eval_labels = rng.integers(0, 10, 17).astype("int32")
    eval_source = in_memory_source(eval_images, eval_labels)

    assert two_cpu_replicas.num_replicas_in_sync == 2
    one_model, one_weights, one_history, one_eval = train(tf.distribute.get_strategy(), initial, train_source,
                                                          eval_source)
    _, two_weights, two_history, two_eval = train(two_cpu_replicas, initial, train_source, eval_source)

    # Compare what training changed: two replicas must reproduce the one-device update up to reduction
    # order (measured ~1e-6 relative). Gradients not divided by the number of replicas, or BN statistics
    # of half batches, miss it by 10% and more overall.
    updates = [np.linalg.norm(w1 - w0) for w0, w1 in zip(initial, one_weights)]
    errors = [np.linalg.norm(w2 - w1) for w1, w2 in zip(one_weights, two_weights)]
    assert max(updates) > 1e-2  # training really changed the weights
    assert np.linalg.norm(errors) < 1e-3 * np.linalg.norm(updates)
    for error, update in zip(errors, updates):
        assert error <= 1e-2 * update + 1e-6
    for name, values in one_history.items():
        np.testing.assert_allclose(two_history[name], values, rtol=1e-3, atol=1e-4, err_msg=name)
    assert all(np.isfinite(value) for value in two_eval.values())
    for name, value in one_eval.items():
        np.testing.assert_allclose(two_eval[name], value, rtol=1e-3, atol=1e-4, err_msg=name)

    # The padding counts for nothing: the padded evaluation equals the plain one over the 17 real images.
    plain = one_model.evaluate(eval_images, eval_labels, batch_size=17, verbose=0, return_dict=True)
    for name, value in plain.items():
        np.testing.assert_allclose(one_eval[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_every_replica_gets_the_same_number_of_full_evaluation_batches(two_cpu_replicas):
    images = np.arange(17 * 4 * 4 * 3, dtype=np.uint32).reshape(17, 4, 4, 3).astype("uint8")
    source = in_memory_source(images, np.arange(17, dtype="int32") % 10)
    dataset, steps = pipeline.distribute_eval(two_cpu_replicas, source, global_batch_size=16)
    batches = list(dataset)
    assert len(batches) == steps == 2
    for images_, _, _ in batches:
        shapes = [tuple(t.shape) for t in two_cpu_replicas.experimental_local_results(images_)]
        assert shapes == [(8, 4, 4, 3), (8, 4, 4, 3)]
    weights = np.concatenate([np.concatenate(two_cpu_replicas.experimental_local_results(b[2])) for b in batches])
    assert weights.tolist() == [1.0] * 17 + [0.0] * 15


def evaluate_users_dataset(strategy, weights, images, labels) -> dict:
    """`model.evaluate` of a user's own dataset (batches of 16, the last one partial) under `strategy`."""
    with strategy.scope():
        model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(0.02), distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=1,
                      rampup_epochs=0.0, weight_decay=1e-4)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    return model.evaluate(dataset, verbose=0, return_dict=True)


def test_a_users_dataset_with_a_partial_last_batch_evaluates_on_two_replicas_as_on_one_device(two_cpu_replicas):
    # 17 images in batches of 16: the second batch holds one image, which two replicas cannot share without
    # padding (one of them would get an empty batch, which crashes some CPU kernels).
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (17, 16, 16, 3)).astype("uint8")
    labels = rng.integers(0, 10, 17).astype("int32")
    weights = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1).get_weights()
    one = evaluate_users_dataset(tf.distribute.get_strategy(), weights, images, labels)
    two = evaluate_users_dataset(two_cpu_replicas, weights, images, labels)
    assert set(one) == set(two)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_training_batches_a_strategy_would_split_unevenly_are_refused(two_cpu_replicas):
    with two_cpu_replicas.scope():
        model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
        model.compile(keras.optimizers.SGD(0.02), distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=1,
                      rampup_epochs=0.0, weight_decay=1e-4)
    images = np.zeros((17, 16, 16, 3), "uint8")
    labels = np.zeros(17, "int32")
    with pytest.raises(ValueError, match=r"drop_remainder=True and a batch size that is a multiple of 2"):
        model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(16), epochs=1, verbose=0)


def test_padding_for_replicas_makes_every_batch_split_evenly_and_weighs_only_real_examples():
    images = np.arange(17 * 2).reshape(17, 2).astype("float32")
    batches = list(data.pad_for_replicas(tf.data.Dataset.from_tensor_slices((images, np.ones(17, "int32"))).batch(16),
                                         num_replicas=2))
    assert [len(labels) for _, labels, _ in batches] == [16, 2]
    _, labels, weights = batches[1]
    np.testing.assert_array_equal(weights, [1.0, 0.0])
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_array_equal(batches[1][0][0], images[16])
