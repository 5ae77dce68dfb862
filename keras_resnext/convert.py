"""PyTorch (timm/torchvision) state dicts <-> Keras ResNeXt/ResNet weights.

The Keras layer names of each family are a contract with this module: each
layer maps to one PyTorch module prefix through its family's rules
(``families.<family>.torch_prefix``), and each Keras variable to one PyTorch
tensor through ``VARIABLE_RULES``. The
conversion is strict both ways: every PyTorch tensor is consumed (except
``num_batches_tracked`` and, when asked, the classifier), every Keras weight
is assigned, and a shape mismatch names the tensor and both shapes. Nothing is
assigned unless everything fits.

Layouts: a convolution kernel is OIHW in PyTorch
(grouped: ``(O, I/groups, kh, kw)``) and HWIO in Keras; a linear weight is
``(out, in)`` in PyTorch and ``(in, out)`` in Keras; BatchNorm ``weight``,
``bias``, ``running_mean``, ``running_var`` are ``gamma``, ``beta``,
``moving_mean``, ``moving_variance``.
"""

import os
import warnings

import keras
import numpy as np

from keras_resnext import files

HEAD_LAYER = "predictions"
IGNORED_SUFFIXES = (".num_batches_tracked",)
# Accepted tensor dtypes (bfloat16: ml_dtypes', which Keras imports, so NumPy reads it).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# Keras variable name -> (PyTorch tensor suffix, Keras-from-PyTorch transpose)
# per layer kind. The inverse transpose is computed, never retyped. A
# depthwise kernel is (C, 1, kh, kw) in PyTorch and (kh, kw, C, 1) in Keras.
VARIABLE_RULES = {
    "conv": {"kernel": ("weight", (2, 3, 1, 0)), "bias": ("bias", None)},
    "depthwise": {"kernel": ("weight", (2, 3, 0, 1)), "bias": ("bias", None)},
    "dense": {"kernel": ("weight", (1, 0)), "bias": ("bias", None)},
    "bn": {"gamma": ("weight", None), "beta": ("bias", None),
           "moving_mean": ("running_mean", None),
           "moving_variance": ("running_var", None)},
}


def _layer_kind(layer):
    # DepthwiseConv2D is not a Conv2D subclass in Keras 3; test it first anyway.
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    return None


def head_prefix(model):
    """The PyTorch prefix of ``model``'s classifier (``"fc"``, ``"head.fc"``)."""
    from keras_resnext import families

    return families.family_of(families.spec_of(model)).HEAD_PREFIX


def weight_table(model, *, skip_head=False):
    """Pairs every weight of ``model`` with its PyTorch tensor name.

    The names come from the rules of the model's family
    (``family.torch_prefix`` and ``family.HEAD_PREFIX``) and the spec the
    model was built from.

    Args:
        model: a model built by ``keras_resnext.build``.
        skip_head: leave the classifier (``predictions``) out.

    Returns:
        A list of ``(keras_variable, torch_name, transpose)``, in model order;
        ``transpose`` maps the PyTorch array to the Keras layout (or None).

    Raises:
        ValueError: not a model built by this package, or a layer with
            weights has no rule.
    """
    from keras_resnext import families

    spec = families.spec_of(model)
    family = families.family_of(spec)
    table = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name == HEAD_LAYER:
            if skip_head:
                continue
            prefix = family.HEAD_PREFIX
        else:
            prefix = family.torch_prefix(layer.name, spec)
        kind = _layer_kind(layer)
        if kind is None or prefix is None:
            raise ValueError(
                f"No PyTorch name rule for layer {layer.name!r} "
                f"({type(layer).__name__}) of model {model.name!r} "
                f"(family {family.NAME!r}).")
        for variable in layer.weights:
            suffix, transpose = VARIABLE_RULES[kind][variable.name]
            table.append((variable, f"{prefix}.{suffix}", transpose))
    return table


def _shape(shape):
    return tuple(int(d) for d in shape)


def _torch_shape(keras_shape, transpose):
    """The PyTorch shape of a Keras weight (``transpose`` maps PyTorch -> Keras)."""
    keras_shape = _shape(keras_shape)
    if transpose is None:
        return keras_shape
    return tuple(keras_shape[i] for i in np.argsort(transpose))


def torch_to_keras(model, state_dict, *, skip_head=False, source="state dict",
                   allow_non_finite=False):
    """Assigns a PyTorch-layout state dict to ``model``, strictly.

    A model without a classifier (``include_top=False``) ignores the file's
    ``fc.*`` tensors; with ``skip_head=True`` a model keeps its own (e.g. a
    10-class) classifier and the file's is ignored.

    Args:
        model: the Keras model.
        state_dict: mapping of PyTorch names to arrays (NumPy or array-likes).
        skip_head: do not load the classifier even if the model has one.
        source: how to name the state dict in error messages (e.g. a path).
        allow_non_finite: load tensors holding NaN or infinity, with a
            warning naming them (e.g. to inspect a diverged run), instead of
            refusing them.

    Raises:
        ValueError: a tensor is missing, unused, has the wrong shape, is not
            floating point (a quantized checkpoint), or holds NaN/infinity
            (unless ``allow_non_finite``); the message names the tensor(s).
            The model is left untouched.
    """
    table = weight_table(model, skip_head=skip_head)
    has_head = any(layer.name == HEAD_LAYER for layer in model.layers)
    head = head_prefix(model) + "."
    values = []
    for variable, name, transpose in table:
        if name not in state_dict:
            raise ValueError(
                f"{source} has no tensor {name!r} for Keras weight {variable.path!r} "
                f"(shape {_shape(variable.shape)}): it was not saved from this "
                f"architecture (model {model.name!r}).")
        array = np.asarray(state_dict[name])
        expected = _torch_shape(variable.shape, transpose)
        if _shape(array.shape) != expected:
            raise ValueError(
                f"Shape mismatch for tensor {name!r} of {source}: the file has "
                f"{_shape(array.shape)}, the model needs {expected} (PyTorch layout; "
                f"Keras weight {variable.path!r} is {_shape(variable.shape)}). The file "
                f"is for another architecture than model {model.name!r}"
                + (" or another number of classes (skip_head=True keeps the model's "
                   "classifier)." if name.startswith(head) else "."))
        _check_float(array, name, source)
        if transpose is not None:
            array = array.transpose(transpose)
        with np.errstate(over="ignore"):  # an overflow is reported below, as infinite
            values.append(array.astype(variable.dtype, copy=False))
    used = {name for _, name, _ in table}
    unused = [name for name in state_dict
              if name not in used and not name.endswith(IGNORED_SUFFIXES) and
              not ((skip_head or not has_head) and name.startswith(head))]
    if unused:
        raise ValueError(
            f"{source} has {len(unused)} tensor(s) that model {model.name!r} does not "
            f"use, first {sorted(unused)[:5]}: it was saved from another architecture "
            "(e.g. a deeper model).")
    # After the cast: a float64 value beyond float32's range is infinite there.
    _check_finite([(name, value) for (_, name, _), value in zip(table, values)], source,
                  allow_non_finite)
    for (variable, _, _), value in zip(table, values):
        variable.assign(value)


def _check_float(array, name, source):
    """Refuses a tensor that is not floating point (casting it would be garbage)."""
    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
        raise ValueError(
            f"Tensor {name!r} of {source} has dtype {array.dtype.name}; weights must be "
            f"floating point ({', '.join(FLOAT_DTYPES)}). An integer tensor is a quantized "
            "checkpoint (values without their scales): dequantize it to float first.")


def _check_finite(named_arrays, source, allow_non_finite):
    """Refuses (or, if allowed, warns about) tensors holding NaN or infinity.

    Refused by default: a NaN or infinite weight makes every prediction NaN or
    meaningless, and a warning would be shown once only, since the converted
    weights are cached and later loads read the cache.
    """
    bad = [name for name, array in named_arrays
           if not np.isfinite(array if array.dtype.kind == "f" else array.astype("float32")).all()]
    if not bad:
        return
    message = (f"{source} has NaN or infinite values in {len(bad)} tensor(s), first "
               f"{bad[:5]}: a model with them predicts NaN.")
    if not allow_non_finite:
        raise ValueError(message + " Pass allow_non_finite=True to load it anyway (e.g. "
                         "to inspect a diverged run).")
    warnings.warn(message + " Loaded anyway (allow_non_finite=True).", stacklevel=3)


def keras_to_torch(model, *, include_num_batches_tracked=True):
    """Exports the weights of ``model`` as a PyTorch-layout state dict.

    The inverse of ``torch_to_keras``: the result loads into timm's or
    torchvision's ``ResNet`` of the same architecture with ``strict=True``
    (after ``torch.from_numpy``).

    Args:
        model: a model built by ``keras_resnext``.
        include_num_batches_tracked: add BatchNorm's ``num_batches_tracked``
            (int64 zero), as a PyTorch ``state_dict()`` has.

    Returns:
        ``{torch_name: np.ndarray}`` (C-contiguous, in model order).
    """
    out = {}
    for variable, name, transpose in weight_table(model):
        array = keras.ops.convert_to_numpy(variable.value)
        if transpose is not None:
            array = array.transpose(np.argsort(transpose))
        out[name] = np.ascontiguousarray(array)
        if include_num_batches_tracked and name.endswith(".running_var"):
            out[name[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return out


def read_safetensors(path):
    """Reads a safetensors file into NumPy arrays, with clear errors.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``{name: np.ndarray}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, or not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such weights file. Received: weights={path!r}")
    try:
        return load_file(path)
    except (SafetensorError, ValueError, TypeError, OSError) as e:
        real = os.path.realpath(path)
        where = repr(path) if real == os.path.abspath(path) else f"{path!r} (-> {real!r})"
        raise ValueError(
            f"Cannot read {where} as a safetensors file ({os.path.getsize(path)} bytes): "
            f"{e}. The file is truncated or corrupt: delete it and download it again."
        ) from e


def save_safetensors(state_dict, path, metadata=None):
    """Writes ``state_dict`` to ``path`` atomically (temp file + rename)."""
    from safetensors.numpy import save_file

    with files.atomic_path(os.fspath(path), suffix=".safetensors") as tmp:
        save_file(state_dict, tmp, metadata=metadata)


def export_torch_weights(model, path):
    """Saves ``model``'s weights as a PyTorch-layout ``.safetensors`` file.

    Load it in PyTorch with ``safetensors.torch.load_file`` and
    ``timm.create_model(arch).load_state_dict(sd)``.
    """
    if not os.fspath(path).endswith(".safetensors"):
        raise ValueError(
            f"The path must end with '.safetensors'. Received: path={os.fspath(path)!r}")
    save_safetensors(keras_to_torch(model), path, metadata={"format": "pt"})
