"""Weights of the wrong dtype or with NaN/infinity are refused, naming the tensor (issue 21)."""

import os
import warnings

import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_resnext
from keras_resnext import convert
from keras_resnext import weights as weights_lib

from helpers import TINY_SPEC

NAME = "tiny"
TENSOR = "layer1.0.conv2.weight"  # a grouped convolution kernel


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", str(tmp_path / "converted"))


def _model():
    return keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=10, name=NAME)


def _state_dict(seed=0):
    """A full PyTorch-layout state dict of the tiny model (with num_batches_tracked)."""
    import keras

    keras.utils.set_random_seed(seed)
    return convert.keras_to_torch(_model())


def _values(model):
    return [np.array(w.numpy()) for w in model.weights]


def _load(tmp_path, state_dict, ext="safetensors", **kwargs):
    """Writes ``state_dict`` to a file, loads it into a fresh model; returns the model."""
    path = os.fspath(tmp_path / f"weights.{ext}")
    if ext == "safetensors":
        save_file(state_dict, path)
    else:
        import torch

        torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                    for k, v in state_dict.items()}, path)
    model = _model()
    before = _values(model)
    try:
        weights_lib.load_weights(model, NAME, path, **kwargs)
    finally:
        _load.untouched = all(np.array_equal(a, b) for a, b in zip(before, _values(model)))
    return model


@pytest.mark.parametrize("ext", ["safetensors", "pth"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "bool"])
def test_non_float_tensor_is_refused(tmp_path, ext, dtype):
    state = _state_dict()
    state[TENSOR] = state[TENSOR].astype(dtype)
    with pytest.raises(ValueError, match=rf"Tensor '{TENSOR}' of .* has dtype {dtype}; "
                                         r"weights must be floating point"):
        _load(tmp_path, state, ext)
    assert _load.untouched
    assert not (tmp_path / "converted").exists() or not os.listdir(tmp_path / "converted")


def test_quantized_checkpoint_is_refused(tmp_path):
    """Every weight int8 (as a quantized export stores them): the first one is named."""
    state = {k: (np.clip(np.round(v * 100), -128, 127).astype("int8")
                 if not k.endswith("num_batches_tracked") else v)
             for k, v in _state_dict().items()}
    with pytest.raises(ValueError, match=r"Tensor 'conv1.weight' .* dtype int8.*dequantize"):
        _load(tmp_path, state)
    assert _load.untouched


def test_quantized_torch_tensor_is_refused(tmp_path):
    import torch

    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _state_dict().items()}
    with warnings.catch_warnings():  # quantized tensors are deprecated in PyTorch
        warnings.simplefilter("ignore", UserWarning)
        state[TENSOR] = torch.quantize_per_tensor(state[TENSOR], 0.01, 0, torch.qint8)
        path = tmp_path / "q.pth"
        torch.save(state, path)
    with pytest.raises(ValueError, match=rf"Tensor '{TENSOR}' .* has dtype qint8"):
        weights_lib.load_weights(_model(), NAME, os.fspath(path))


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_float_dtypes_load(tmp_path, dtype):
    state = _state_dict(seed=3)
    cast = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in state.items()}
    model = _load(tmp_path, cast)
    got = convert.keras_to_torch(model)
    tol = {"float16": 1e-3, "float64": 0, "bfloat16": 1e-2}[dtype]
    np.testing.assert_allclose(got[TENSOR], state[TENSOR], rtol=tol, atol=tol)


@pytest.mark.parametrize("ext", ["safetensors", "pth"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_tensor_is_refused_unless_allowed(tmp_path, ext, value):
    state = _state_dict()
    state[TENSOR] = state[TENSOR].copy()
    state[TENSOR].flat[5] = value
    state["bn1.running_var"] = state["bn1.running_var"].copy()
    state["bn1.running_var"][0] = value
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 tensor\(s\), first "
                                         rf"\['bn1.running_var', '{TENSOR}'\].*"
                                         "allow_non_finite=True"):
        _load(tmp_path, state, ext)
    assert _load.untouched

    with pytest.warns(UserWarning, match=rf"NaN or infinite values in 2 .*'{TENSOR}'"):
        model = _load(tmp_path, state, ext, allow_non_finite=True)
    assert not _load.untouched
    got = convert.keras_to_torch(model)[TENSOR]
    assert not np.isfinite(got.flat[5]) and np.isfinite(np.delete(got, 5)).all()


def test_float64_beyond_float32_range_is_infinite(tmp_path):
    state = _state_dict()
    state[TENSOR] = state[TENSOR].astype("float64")
    state[TENSOR].flat[0] = 1e300
    with pytest.raises(ValueError, match=rf"infinite values in 1 tensor\(s\), first \['{TENSOR}'\]"):
        _load(tmp_path, state)


def test_clean_file_loads_without_warning(tmp_path):
    state = _state_dict(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = _load(tmp_path, state)
    np.testing.assert_array_equal(convert.keras_to_torch(model)[TENSOR], state[TENSOR])


def test_bfloat16_torch_file_loads(tmp_path):
    import torch

    state = _state_dict(seed=2)
    torch.save({k: (torch.from_numpy(v).bfloat16() if v.dtype.kind == "f"
                    else torch.from_numpy(np.ascontiguousarray(v)))
                for k, v in state.items()}, tmp_path / "bf16.pth")
    model = _model()
    weights_lib.load_weights(model, NAME, os.fspath(tmp_path / "bf16.pth"))
    np.testing.assert_allclose(convert.keras_to_torch(model)[TENSOR], state[TENSOR],
                               rtol=1e-2, atol=1e-2)
