"""Pytest fixtures; shared helpers and constants live in helpers.py."""

import os
import shutil
import tempfile

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


# XLA's LLVM optimization level for the session's compiles (JAX children, TensorFlow's
# jit_compile). Level 0 compiles a ResNeXt-50 forward on JAX in 5.4 s instead of 15.9 (the
# test_backends JAX child: 202 s -> 145 s). It changes how fast the generated code runs and
# its rounding (fused multiply-adds), not what it computes: the fixtures' logits moved by
# 1e-5 on values of ~15, after a fit step by 8e-4 on ~20, well inside every tolerance.
# Speed is measured by applications/benchmark.py, which runs at XLA's default.
XLA_TEST_FLAG = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    """One JAX compilation cache on disk for the session's processes (workers, children).

    JAX children compile the same models again (a benchmark's memory child, the
    fixtures in several files): read from the cache instead. Every compile is
    kept, the sub-second ones too (a weight initializer's, per shape). And
    ``XLA_TEST_FLAG``, unless ``XLA_FLAGS`` already sets that level. Set here,
    before xdist starts its workers, which inherit the environment.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.jax_cache = tempfile.mkdtemp(prefix="keras_resnext_jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.jax_cache
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    flags = os.environ.get("XLA_FLAGS")
    if "--xla_backend_optimization_level" not in (flags or ""):
        config.xla_flags = flags
        os.environ["XLA_FLAGS"] = f"{flags or ''} {XLA_TEST_FLAG}".strip()


def pytest_unconfigure(config):
    if getattr(config, "jax_cache", None):
        shutil.rmtree(config.jax_cache, ignore_errors=True)
        for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
            os.environ.pop(name, None)
    if hasattr(config, "xla_flags"):
        if config.xla_flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = config.xla_flags


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
