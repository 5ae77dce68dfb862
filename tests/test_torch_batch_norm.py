"""BatchNorm's PyTorch path (``torch.nn.functional.batch_norm``) equals Keras' BatchNormalization.

In a child process with ``KERAS_BACKEND=torch`` (Keras picks its backend once, at import).
"""

import numpy as np
import pytest

from helpers import run_backend_child


def test_outputs_gradients_and_moving_statistics_equal_keras():
    errors = run_backend_child("""
        import json
        import keras, numpy as np, torch
        import torch.nn.functional as F
        from keras_resnext import layers as L

        calls = []
        original = F.batch_norm
        F.batch_norm = lambda *a, **k: calls.append(1) or original(*a, **k)
        errors = {}
        for policy in ("float32", "mixed_bfloat16"):
            keras.config.set_dtype_policy(policy)
            for training in (True, False):
                for center, scale in ((True, True), (False, False)):
                    for axis, shape in ((-1, (4, 5, 5, 6)), (1, (4, 6, 5, 5)),
                                        (-1, (1, 1, 1, 6))):  # one value per channel
                        kw = dict(axis=axis, momentum=0.9, epsilon=1e-5, center=center,
                                  scale=scale)
                        ours = L.BatchNorm(**kw)
                        theirs = keras.layers.BatchNormalization(**kw)
                        ours.build(shape); theirs.build(shape)
                        rng = np.random.default_rng(len(errors))
                        weights = [rng.uniform(0.5, 1.5, v.shape).astype("float32")
                                   for v in ours.weights]
                        ours.set_weights(weights); theirs.set_weights(weights)
                        x = (rng.standard_normal(shape) * 3 + 1).astype("float32")
                        dy = torch.tensor(rng.standard_normal(shape).astype("float32"))
                        got = []
                        for layer in (ours, theirs):
                            xt = torch.tensor(x, requires_grad=True)
                            y = layer(xt, training=training)
                            (y.float() * dy).sum().backward()
                            got.append([y.float(), xt.grad]
                                       + [v.value.grad for v in layer.trainable_weights]
                                       + [v.value for v in layer.non_trainable_weights])
                        key = f"{policy} training={training} center={center} {shape}"
                        errors[key] = [
                            float((a - b).abs().max() / (b.abs().max() + 1e-12))
                            for a, b in zip(*got)]
        print(json.dumps({"errors": errors, "fused_calls": len(calls)}))
    """, "torch")
    # Every case but training on one value per channel took the fused kernel (per
    # policy: 2 center/scale x 3 shapes at inference, x 2 shapes in training).
    assert errors["fused_calls"] == 2 * (2 * 3 + 2 * 2)
    for key, errs in errors["errors"].items():
        # y, dx, (dgamma, dbeta,) moving mean, moving variance
        assert len(errs) == (6 if "center=True" in key else 4), key
        assert max(errs) < (1e-5 if key.startswith("float32") else 2**-6), (key, errs)


@pytest.mark.parametrize("training", [True, False])
def test_fit_step_on_a_tiny_resnext_updates_moving_statistics(training):
    """A model's BatchNorms, through ``fit``/``predict`` (Keras' PyTorch trainer)."""
    out = run_backend_child(f"""
        import json
        import keras, numpy as np
        import keras_resnext
        from keras_resnext import layers as L
        from helpers import TINY_SPEC, random_images

        model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
        bn = [l for l in model.layers if isinstance(l, L.BatchNorm)]
        before = [np.array(keras.ops.convert_to_numpy(l.moving_mean)) for l in bn]
        x, y = random_images(4, 32) / 255.0, np.arange(4) % 4
        if {training}:
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            loss = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
        else:
            loss = float(model.predict(x, verbose=0).sum())
        after = [keras.ops.convert_to_numpy(l.moving_mean) for l in bn]
        changed = sum(not np.allclose(a, b) for a, b in zip(before, after))
        print(json.dumps({{"bn": len(bn), "changed": changed, "loss": loss}}))
    """, "torch")
    assert out["bn"] > 0 and np.isfinite(out["loss"])
    assert out["changed"] == (out["bn"] if training else 0)
