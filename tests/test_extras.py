"""The core install builds models and loads weights; features name their missing extra."""

import os
import subprocess
import sys
import textwrap

from keras_resnext import extras

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

# Run in a fresh interpreter where every optional module but JAX fails to import, as in
# an environment with only `pip install keras-resnext[jax]` (Keras needs a backend).
HIDE = """
    import importlib.abc, sys
    HIDDEN = {hidden!r}

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: (
        None if name.split(".")[0] in HIDDEN else _find_spec(name, *a))
"""


def run_core_only(code):
    hidden = sorted({m for modules in extras.EXTRAS.values() for m in modules}
                    - set(extras.EXTRAS["jax"]))
    source = textwrap.dedent(HIDE.format(hidden=hidden)) + textwrap.dedent(code)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "jax"}
    return subprocess.run([sys.executable, "-c", source], env=env, capture_output=True,
                          text=True, timeout=300)


def test_core_builds_and_loads_weights_without_extras():
    result = run_core_only(f"""
        import json, numpy as np
        import keras_resnext
        from keras_resnext import convert, extras
        assert sorted(extras.missing("train")) == sorted(extras.EXTRAS["train"].values())
        config = json.load(open({os.path.join(FIXTURES, "resnext_tiny.json")!r}))
        spec = keras_resnext.Spec.from_config(config)
        size = config["input_size"]
        model = keras_resnext.build(spec, weights={os.path.join(FIXTURES, "resnext_tiny.safetensors")!r},
                                    classes=config["num_classes"], input_shape=(size, size, 3),
                                    classifier_activation=None)
        io = np.load({os.path.join(FIXTURES, "resnext_tiny_io.npz")!r})
        assert np.abs(model.predict(io["input_nhwc"], verbose=0) - io["logits"]).max() < 1e-4
        assert keras_resnext.ResNeSt14D(weights=None).count_params() > 0
        for module in {sorted({m for ms in extras.EXTRAS.values() for m in ms} - {"jax"})!r}:
            assert module not in __import__("sys").modules, module
        print("CORE-OK")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CORE-OK" in result.stdout


def test_missing_extra_is_one_line_naming_it():
    result = run_core_only("""
        from keras_resnext import extras
        for extra, feature in [("train", "Training"), ("export", "Export")]:
            try:
                extras.require(extra, feature)
            except extras.MissingExtraError as e:
                print(str(e))
            else:
                raise SystemExit(f"{extra}: no error")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Training needs the [train] extra (") and \
        "pip install 'keras-resnext[train]'" in lines[0] and "tensorflow-datasets" in lines[0]
    assert lines[1].startswith("Export needs the [export] extra (") and "tf2onnx" in lines[0] + lines[1]


def test_extras_match_setup_cfg():
    with open(os.path.join(FIXTURES, "..", "..", "setup.cfg"), encoding="utf-8") as f:
        text = f.read()
    for extra, packages in extras.EXTRAS.items():
        listed = set()
        for line in text.split(f"\n{extra} =\n", 1)[1].split("\n"):
            if not line.startswith("    "):
                break  # the next option
            listed.add(line.strip().split(">")[0].split("<")[0].split("=")[0])
        if "%(tensorflow)s" in listed:  # setup.cfg's reference to the [tensorflow] extra
            listed = listed - {"%(tensorflow)s"} | {"tensorflow"}
        assert listed == set(packages.values()), (extra, listed)
    assert not any(extras.missing(extra) for extra in extras.EXTRAS)  # [test] has all


def test_fit_and_export_clis_name_the_missing_extra_before_work(tmp_path):
    repo = os.path.join(FIXTURES, "..", "..")
    for script, args, extra in [
            ("training/fit.py", ["--model-dir", str(tmp_path / "run")], "train"),
            ("applications/export.py", ["--model", "resnext50_32x4d",
                                        "--out", str(tmp_path / "exports")], "export")]:
        result = run_core_only(f"""
            import runpy, sys
            sys.argv = [{script!r}] + {args!r}
            runpy.run_path({os.path.join(repo, script)!r}, run_name="__main__")
        """)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, result.stderr
        assert len(lines) == 1 and f"pip install 'keras-resnext[{extra}]'" in lines[0], lines
        assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []  # nothing written
