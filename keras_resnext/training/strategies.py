"""tf.distribute strategies by name, and who writes files in a multi-worker job.

Keras 3 ``Model.fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so the training loop (``loop.py``) is a custom one that
works the same way under every strategy listed here.
"""

import json
import logging
import os

STRATEGIES = ("mirrored", "multi_worker_mirrored", "tpu", "one_device", "default")

log = logging.getLogger("keras_resnext.training")


def validate_strategy_args(name, tpu=None):
    """Cheap checks of ``--strategy``/``--tpu``/``TF_CONFIG``, before TensorFlow runs.

    Raises:
        ValueError: unknown strategy, missing ``--tpu``, or malformed ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy. Received: strategy={name!r}. "
            f"Accepted: {', '.join(STRATEGIES)}")
    if name == "tpu" and not tpu:
        raise ValueError(
            "strategy='tpu' needs the TPU address: --tpu grpc://HOST:8470, a TPU "
            "name, or 'local' on a TPU VM. Received: tpu=None")
    if name == "multi_worker_mirrored":
        tf_config = read_tf_config()
        if tf_config:
            task = tf_config.get("task", {})
            cluster = tf_config.get("cluster", {})
            if task.get("type") not in cluster or not isinstance(task.get("index"), int):
                raise ValueError(
                    "TF_CONFIG must name this task in its cluster, e.g. "
                    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                    '"task": {"type": "worker", "index": 0}}. '
                    f"Received: TF_CONFIG={os.environ.get('TF_CONFIG')!r}")


def read_tf_config():
    """The parsed ``TF_CONFIG`` environment variable (``{}`` if unset).

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON.
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Received: {raw!r}") from None


def make_strategy(name, *, tpu=None):
    """Creates the strategy ``name``; call it before any other TensorFlow op.

    Args:
        name: one of ``STRATEGIES``: ``mirrored`` (all local GPUs, or the CPU),
            ``multi_worker_mirrored`` (the cluster in ``TF_CONFIG``), ``tpu``,
            ``one_device`` (the first GPU, else the CPU), ``default`` (no strategy).
        tpu: TPU address or name for ``tpu``.

    Returns:
        A ``tf.distribute.Strategy``.
    """
    import tensorflow as tf

    validate_strategy_args(name, tpu)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        if not read_tf_config():
            log.warning("TF_CONFIG is not set: multi_worker_mirrored runs as a single worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def task_identity(strategy):
    """``(task_type, task_id)`` of this process (``(None, 0)`` outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def num_workers(strategy):
    """Hosts running an input pipeline (the chief and the workers of the cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def is_chief(strategy):
    """Whether this process owns the run's files (the chief, or worker 0 without one)."""
    task_type, task_id = task_identity(strategy)
    if task_type in (None, "chief"):
        return True
    if task_type == "worker" and task_id == 0:
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        return "chief" not in cluster
    return False


def check_batch_size(batch_size, strategy):
    """Raises ``ValueError`` unless the global batch splits evenly across replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"The global batch size must be divisible by the number of replicas "
            f"({replicas}). Received: batch_size={batch_size}. "
            f"Use a multiple of {replicas}, e.g. "
            f"{replicas * max(1, round(batch_size / replicas))}.")
