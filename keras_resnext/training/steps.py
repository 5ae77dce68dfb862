"""The distributed training and evaluation steps, and the metrics they sum.

Keras 3 ``Model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so the step is ``strategy.run`` inside a
``tf.function``: the per-replica loss is ``tf.nn.compute_average_loss`` over the
global batch, and the Keras optimizer all-reduces the gradients itself
(``TFOptimizer._all_reduce_sum_gradients``).
"""

import keras

METRICS = ("loss", "top1", "top5")  # each summed with the examples' ``count``


def zero_sums():
    """Running totals of ``metric_sums``: ``METRICS`` and ``count``, all 0.0."""
    return dict.fromkeys((*METRICS, "count"), 0.0)


def metric_sums(labels, probs, *, top_k, weights=None):
    """Sums of a batch's cross-entropy, top-1 and top-``top_k`` hits, and examples.

    Args:
        labels: one-hot labels, ``(batch, classes)``.
        probs: predicted probabilities (any float dtype; summed in float32).
        top_k: ``k`` of the top-5 metric (``min(5, classes)``).
        weights: per-example weights (``0`` for the padding of a last batch);
            default: ones.

    Returns:
        A dict of float32 scalars: ``loss``, ``top1``, ``top5``, ``count``.
    """
    import tensorflow as tf

    targets = tf.argmax(labels, axis=-1, output_type=tf.int32)
    probs = tf.cast(probs, tf.float32)
    per_example = keras.losses.categorical_crossentropy(labels, probs)
    if weights is None:
        weights = tf.ones_like(per_example)
    top1 = tf.cast(tf.math.in_top_k(targets, probs, 1), tf.float32)
    top5 = tf.cast(tf.math.in_top_k(targets, probs, top_k), tf.float32)
    return {"loss": tf.reduce_sum(per_example * weights),
            "top1": tf.reduce_sum(top1 * weights),
            "top5": tf.reduce_sum(top5 * weights),
            "count": tf.reduce_sum(weights)}


def make_steps(strategy, model, eval_model, optimizer, recipe, *, decayed, num_classes,
               jit_compile=False):
    """The distributed training and evaluation steps.

    Each returns the per-batch sums ``loss``, ``top1``, ``top5``, ``count``
    reduced over all replicas. ``train_step(iterator, stop)`` also sums
    ``stop`` (1.0 where a process was asked to stop, else 0.0) in the step's
    own all-reduce, so every worker of a job learns at the same step that one
    of them got a signal, and all stop after that step. The training loss of
    a replica is its examples' cross-entropy divided by the global batch
    (``tf.nn.compute_average_loss``), plus the replica's share of the L2
    penalty for SGD, so that the sum over replicas that the Keras optimizer
    all-reduces is the global-batch gradient.

    Args:
        strategy: the ``tf.distribute.Strategy`` the variables live in.
        model: the training model.
        eval_model: the evaluation model (``model``, or a copy at another size).
        optimizer: a built Keras optimizer.
        recipe: the ``Recipe``.
        decayed: variables under L2 decay (SGD).
        num_classes: number of classes (top-5 becomes top-k for fewer than 5).
        jit_compile: XLA-compile the per-replica functions.

    Returns:
        ``(train_step, eval_step)``: ``tf.function``s of a distributed iterator
        (and, for ``train_step``, a float32 scalar ``stop``).
    """
    import tensorflow as tf

    l2 = recipe.optimizer == "sgd" and recipe.weight_decay > 0
    top_k = min(5, num_classes)

    def train_replica_step(images, labels, stop):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, probs, label_smoothing=recipe.label_smoothing)
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=recipe.batch_size)
            if l2:
                penalty = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                    for v in decayed])
                loss += tf.nn.scale_regularization_loss(0.5 * recipe.weight_decay * penalty)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        # identity: each replica's own tensor, so that it is reduced over replicas.
        return {**metric_sums(labels, probs, top_k=top_k), "stop": tf.identity(stop)}

    def eval_replica_step(images, labels, weights):
        return metric_sums(labels, eval_model(images, training=False), top_k=top_k,
                           weights=weights)

    if jit_compile:
        train_replica_step = tf.function(train_replica_step, jit_compile=True)
        eval_replica_step = tf.function(eval_replica_step, jit_compile=True)

    def reduce(per_replica):
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    @tf.function
    def train_step(iterator, stop):
        return reduce(strategy.run(train_replica_step, args=(*next(iterator), stop)))

    @tf.function
    def eval_step(iterator):
        return reduce(strategy.run(eval_replica_step, args=next(iterator)))

    return train_step, eval_step


def sync_eval_model(model, eval_model):
    """Copies the weights of ``model`` into ``eval_model`` when it is another model."""
    if eval_model is not model:
        eval_model.set_weights(model.get_weights())
