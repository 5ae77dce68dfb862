"""Pytest fixtures; shared helpers and constants live in helpers.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from helpers import TINY_SPEC  # noqa: E402


def pytest_report_header(config):
    """The CPU kind and oneDNN state at the top of every test run."""
    from keras_resnext import benchmark

    m = benchmark.cpu_description()
    return [f"cpu: {m['cpu']}; flags: {' '.join(m['cpu_flags']) or 'none of avx2/avx512/amx'}",
            f"oneDNN: {'on' if m['onednn_enabled'] else 'off'} "
            f"(TF_ENABLE_ONEDNN_OPTS={m['onednn_setting']}); "
            "tests that depend on it run in subprocesses with both settings"]


@pytest.fixture
def tiny_spec():
    return TINY_SPEC


@pytest.fixture
def dtype_policy():
    """Sets Keras' global dtype policy: ``dtype_policy("mixed_float16")``.

    The policy in force before the test is restored afterwards, whatever the
    test set and however it ended.
    """
    import keras

    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)
