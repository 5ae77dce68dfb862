"""keras-hub's detector and segmenter on a ResNeXt backbone, under JAX and PyTorch.

The recipes of tests/test_keras_hub.py (which runs them on TensorFlow) run in
one fresh process per backend, both in the same child to pay the imports once,
on the smallest inputs the recipes take (64-pixel images, batch 2, 2 epochs of
2 steps). TensorFlow stays importable there: keras-hub runs ``fit``/``predict``
preprocessing in ``tf.data`` on every backend.
"""

import json

import pytest

from helpers import RETINANET_SHAPES
from helpers import assert_trained
from helpers import run_child

pytest.importorskip("keras_resnext.keras_hub")

SIZE = 64

# Each recipe's failure is reported by name, so that one recipe failing on a
# backend leaves the other checked.
CHILD = f"""
import json, time, traceback
start = time.perf_counter()
import keras
from helpers import deeplabv3_recipe, retinanet_recipe
result = {{"backend": keras.config.backend(), "import_s": time.perf_counter() - start}}
for name, recipe in [("retinanet", retinanet_recipe), ("deeplabv3", deeplabv3_recipe)]:
    begin = time.perf_counter()
    try:
        result[name] = recipe({SIZE})
    except Exception:
        result[name] = {{"error": traceback.format_exc()[-3000:]}}
    result[name]["seconds"] = time.perf_counter() - begin
result["seconds"] = time.perf_counter() - start
print(json.dumps(result))
"""


# One child per backend for both recipes: JAX compiles each train and predict
# step (minutes on 2 shared cores), PyTorch runs them eagerly.
@pytest.fixture(scope="module", params=["jax", "torch"])
def recipes(request):
    out = run_child(CHILD, backend=request.param)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["backend"] == request.param
    print(f"{request.param}: child {result['seconds']:.0f} s (imports "
          f"{result['import_s']:.0f} s, RetinaNet {result['retinanet']['seconds']:.0f} s, "
          f"DeepLabV3 {result['deeplabv3']['seconds']:.0f} s)")
    return result


def recipe(recipes, name):
    """One recipe's result, failing with the child's traceback if it raised."""
    result = recipes[name]
    assert "error" not in result, result.get("error")
    return result


@pytest.mark.slow
def test_retinanet_on_a_resnext_backbone_trains_and_predicts_on_backend(recipes):
    result = recipe(recipes, "retinanet")
    assert_trained(result)
    assert result["converter_error"] <= 1e-5  # the weights' normalisation
    assert result["shapes"] == RETINANET_SHAPES


@pytest.mark.slow
def test_deeplabv3_on_a_resnext_backbone_trains_and_predicts_on_backend(recipes):
    result = recipe(recipes, "deeplabv3")
    assert_trained(result, loss_decreases=False)  # see deeplabv3_recipe
    assert result["shape"] == [2, SIZE, SIZE, 3]
