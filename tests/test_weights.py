"""weights= resolution: registry, local files, converted cache, hub download/offline."""

import dataclasses
import hashlib
import json
import os
import sys
import warnings

from huggingface_hub import constants as hf_constants
import numpy as np
import pytest

import keras_resnext
import keras_resnext.families
from keras_resnext import hub
from keras_resnext import pretrained
from keras_resnext import weights as weights_lib

from helpers import FakeHub

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
SOURCES = os.path.join(TOOLS, "weights_sources")
TINY = "resnext_tiny"


# ---------------------------------------------------------------- helpers


def closed_port_url():
    """An endpoint on loopback where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tiny_config():
    with open(os.path.join(FIXTURES, f"{TINY}.json"), encoding="utf-8") as f:
        return json.load(f)


def tiny_model(**kwargs):
    config = tiny_config()
    kwargs.setdefault("classes", config["num_classes"])
    return keras_resnext.build(
        keras_resnext.Spec.from_config(config), name=TINY,
        input_shape=(config["input_size"],) * 2 + (3,), classifier_activation=None,
        **kwargs)


def tiny_logits(model):
    io = np.load(os.path.join(FIXTURES, f"{TINY}_io.npz"))
    return np.abs(model.predict(io["input_nhwc"], verbose=0) - io["logits"]).max()


def tiny_registry(**overrides):
    """A registry with the fixture model as architecture 'tiny' (tags a, nc)."""
    base = pretrained.get_pretrained("resnext50_32x4d", "tv_in1k")
    entry = dataclasses.replace(
        base, arch="tiny", tag="a_in1k", hf_hub_id="test/tiny.a_in1k",
        num_classes=10, input_size=64, test_input_size=64, **overrides)
    nc = dataclasses.replace(entry, tag="nc_in1k", hf_hub_id="test/tiny.nc_in1k",
                             license="cc-by-nc-4.0")
    missing = dataclasses.replace(entry, tag="gone_in1k", hf_hub_id="test/tiny.gone_in1k")
    return {"tiny": {"a_in1k": entry, "nc_in1k": nc, "gone_in1k": missing}}


def files_under(path):
    return sorted(os.path.relpath(os.path.join(r, f), path)
                  for r, _, fs in os.walk(path) for f in fs)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test touches the user's caches or the network configuration."""
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (whatever test ran
    # first); tests state it through the environment, which hub.py reads.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_bytes():
    with open(os.path.join(FIXTURES, f"{TINY}.safetensors"), "rb") as f:
        return f.read()


# ---------------------------------------------------------------- registry


def test_registry_matches_catalog_and_timm_configs():
    with open(os.path.join(SOURCES, "weights_catalog.json"), encoding="utf-8") as f:
        catalog = json.load(f)
    with open(os.path.join(SOURCES, "timm_pretrained_cfgs.json"), encoding="utf-8") as f:
        timm_cfgs = json.load(f)
    registry = pretrained.registry()
    expected = {(a, t) for a, tags in catalog.items() if not a.startswith("_") for t in tags}
    assert {(a, t) for a, tags in registry.items() for t in tags
            if keras_resnext.families.get_entry(a).family.NAME == "resnet"} == expected
    for (arch, tag) in expected:
        entry, listed, cfg = registry[arch][tag], catalog[arch][tag], timm_cfgs[f"{arch}.{tag}"]
        assert entry.hf_hub_id == listed["hf_hub_id"] == cfg["hf_hub_id"]
        assert (entry.license, entry.top1, entry.top1_source) == (
            listed["license"], listed["top1"], listed["top1_source"])
        assert entry.input_size == cfg["input_size"][1]
        # timm leaves test_* unset (None) when they equal the training ones.
        assert entry.test_input_size == (cfg["test_input_size"] or cfg["input_size"])[1]
        assert entry.crop_pct == cfg["crop_pct"]
        assert entry.test_crop_pct == (cfg["test_crop_pct"] or cfg["crop_pct"])
        assert (entry.interpolation, list(entry.mean), list(entry.std)) == (
            cfg["interpolation"], cfg["mean"], cfg["std"])
        assert entry.num_classes == 1000 and entry.arch in keras_resnext.VARIANTS


def test_shipped_registry_is_the_generator_output():
    """keras_resnext/data/pretrained.json == tools/build_pretrained.py's output."""
    sys.path.insert(0, TOOLS)
    try:
        import build_pretrained
    finally:
        sys.path.remove(TOOLS)
    with open(build_pretrained.REGISTRY, encoding="utf-8") as f:
        assert f.read() == build_pretrained.render(build_pretrained.build())
    registry = pretrained.registry()
    for arch in registry:  # every registered tag belongs to a registered model
        assert arch in keras_resnext.list_models()


def test_docs_table_matches_registry():
    path = os.path.join(os.path.dirname(FIXTURES), "..", "docs", "weights.md")
    with open(path, encoding="utf-8") as f:
        rows = [line.split("|")[1:-1] for line in f if line.startswith("| `")]
    documented = {}
    for arch, tag, license_, top1, source, train, test, interpolation in rows:
        tag = tag.strip()
        default = tag.endswith("(default)")
        tag = tag.split()[0].strip("`")
        documented[(arch.strip().strip("`"), tag)] = (
            default, license_.strip(), float(top1), source.strip(), train.strip(),
            test.strip(), interpolation.strip())
    expected = {}
    for arch, tags in pretrained.registry().items():
        for tag, e in tags.items():
            expected[(arch, tag)] = (
                pretrained.get_pretrained(arch).tag == tag, e.license, e.top1,
                e.top1_source, f"{e.input_size} / {e.crop_pct}",
                f"{e.test_input_size} / {e.test_crop_pct}", e.interpolation)
    assert documented == expected


def test_default_tags_are_the_issue_choice_and_permissive():
    defaults = {a: pretrained.get_pretrained(a).tag for a in pretrained.registry()}
    assert {a: t for a, t in defaults.items() if not a.startswith(("resnest", "res2", "rexnet"))} == {
        "resnext50_32x4d": "tv2_in1k", "resnext101_32x8d": "tv2_in1k",
        "resnext101_64x4d": "tv_in1k", "resnext101_32x4d": "gluon_in1k",
        "resnext50d_32x4d": "bt_in1k", "resnet50": "tv2_in1k",
        "resnet101": "tv2_in1k", "resnet152": "tv2_in1k"}
    assert {t for a, t in defaults.items() if a.startswith("resnest")} <= {"gluon_in1k", "in1k"}
    assert {t for a, t in defaults.items() if a.startswith("res2")} == {"in1k"}
    assert {t for a, t in defaults.items() if a.startswith("rexnet")} == {"nav_in1k"}
    for arch in pretrained.registry():
        assert not pretrained.get_pretrained(arch).non_commercial
    # A non-commercial tag is reachable only by name.
    entry = pretrained.get_pretrained("resnext50_32x4d", "fb_swsl_ig1b_ft_in1k")
    assert entry.non_commercial and entry.license == "cc-by-nc-4.0"
    assert entry.eval_transform() == keras_resnext.EvalTransform(
        size=224, crop_pct=0.875, interpolation="bilinear")
    assert pretrained.get_pretrained("resnext50_32x4d").eval_transform() == (
        keras_resnext.EvalTransform(224, crop_pct=0.965))  # torchvision: 232 -> 224


def test_bad_weights_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"Valid tags: 'imagenet' \(= 'tv2_in1k'\).*'a1h_in1k'"):
        keras_resnext.ResNeXt50(weights="tv3_in1k")
    with pytest.raises(ValueError, match="No pretrained weights are published for 'resnext29_8x64d'"):
        keras_resnext.create_model("resnext29_8x64d", weights="imagenet")
    with pytest.raises(ValueError, match="`classes` should be 1000"):
        keras_resnext.ResNeXt50(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="no such file"):
        keras_resnext.create_model("resnet50", weights=str(tmp_path / "missing.safetensors"))
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"0")
    with pytest.raises(ValueError, match=r"Accepted suffixes: .*'\.safetensors'.*weights\.bin"):
        keras_resnext.create_model("resnet50", weights=str(odd))
    with pytest.raises(ValueError, match="hf-hub:<owner>/<repo>"):
        keras_resnext.create_model("resnet50", weights="hf-hub:")


def test_weights_value_is_parsed_once(tmp_path):
    """Every kind of ``weights=`` becomes one ``Weights``: file, repo, entry, license."""
    parse = weights_lib.parse
    assert parse(TINY, None) == weights_lib.Weights("none")
    default = pretrained.get_pretrained("resnext50_32x4d")
    imagenet = parse("resnext50_32x4d", "imagenet")
    assert (imagenet.kind, imagenet.repo, imagenet.filename, imagenet.revision) == (
        "pretrained", "timm/resnext50_32x4d.tv2_in1k", "model.safetensors", None)
    assert imagenet.entry == default and imagenet.license == "bsd-3-clause"
    assert imagenet.eval_transform() == default.eval_transform()
    nc = parse("resnext50_32x4d", "fb_swsl_ig1b_ft_in1k")
    assert nc.entry.non_commercial and nc.license == "cc-by-nc-4.0"
    hub = parse("resnext50_32x4d", "hf-hub:timm/resnext50_32x4d.tv2_in1k@v1.2")
    assert (hub.kind, hub.repo, hub.revision, hub.entry) == (
        "hub", "timm/resnext50_32x4d.tv2_in1k", "v1.2", default)
    unlisted = parse("resnext50_32x4d", "hf-hub:someone/finetuned")
    assert (unlisted.kind, unlisted.filename, unlisted.entry, unlisted.license) == (
        "hub", "model.safetensors", None, None)
    # Without an entry: timm's defaults at the size the caller gives.
    assert unlisted.eval_transform(default_size=288) == keras_resnext.EvalTransform(288)
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"not read by parse")
    parsed = parse("resnext50_32x4d", local)
    assert (parsed.kind, parsed.path, parsed.entry, parsed.pretrained) == (
        "file", str(local), None, False)
    assert parse("resnext50_32x4d", parsed) is parsed
    with pytest.raises(ValueError, match=r"Received: weights=3"):
        parse("resnext50_32x4d", 3)


def test_no_import_cycle_between_package_modules():
    """weights.py used to import model.py back; no module of the package may."""
    import ast

    package = os.path.dirname(keras_resnext.__file__)
    graph = {}
    for folder, _, names in os.walk(package):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path[:-3], os.path.dirname(package)).replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        "keras_resnext"):
                    deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            graph[module] = deps
    # A package's own __init__ re-exports its modules; edges into it do not loop.
    graph = {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".")
                 and d != "keras_resnext"}
             for m, deps in graph.items()}
    assert {"keras_resnext.weights", "keras_resnext.pretrained",
            "keras_resnext.classifier"} <= set(graph)

    def reaches(start, target, seen):
        for dep in graph[start] - seen:
            seen.add(dep)
            if dep == target or reaches(dep, target, seen):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"
    assert "keras_resnext.model" not in graph["keras_resnext.weights"]


@pytest.mark.skipif(weights_lib.torch_available(), reason="checks the no-torch message")
def test_pth_without_torch_is_a_clear_error(tmp_path):
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"PK\x03\x04 not read")
    with pytest.raises(ValueError, match=r"needs PyTorch, which is not installed.*safetensors"):
        keras_resnext.create_model("resnext50_32x4d", weights=str(pth))
    with pytest.raises(ValueError, match="needs PyTorch"):
        weights_lib.load_weights(tiny_model(), TINY, str(pth))
    assert not os.path.exists(tmp_path / "converted")


# ---------------------------------------------------------------- local files


def test_local_safetensors_converted_then_cached(tmp_path):
    source = os.path.join(FIXTURES, f"{TINY}.safetensors")
    model = tiny_model()
    first = weights_lib.load_weights(model, TINY, source)
    assert tiny_logits(model) <= 1e-4
    assert not first.from_cache and os.path.isfile(first.cache_path)
    assert files_under(tmp_path / "converted") == [os.path.basename(first.cache_path)]
    assert first.cache_path.endswith(".weights.h5")
    assert hub.file_sha256(source)[:16] in first.cache_path

    again = tiny_model()
    second = weights_lib.load_weights(again, TINY, source)
    assert second.from_cache and second.cache_path == first.cache_path
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Another layout (no top) is another cache entry, not a broken load.
    headless = tiny_model(include_top=False)
    third = weights_lib.load_weights(headless, TINY, source)
    assert not third.from_cache and third.cache_path != first.cache_path
    np.testing.assert_array_equal(headless.get_layer("conv1_conv").kernel.numpy(),
                                  model.get_layer("conv1_conv").kernel.numpy())

    # cache=False converts and writes nothing.
    uncached = weights_lib.load_weights(tiny_model(), TINY, source, cache=False)
    assert uncached.cache_path is None and not uncached.from_cache
    assert len(files_under(tmp_path / "converted")) == 2

    # A damaged cache entry is rebuilt, with a warning.
    with open(first.cache_path, "wb") as f:
        f.write(b"not hdf5")
    with pytest.warns(UserWarning, match="Ignoring unreadable converted weights"):
        fourth = weights_lib.load_weights(tiny_model(), TINY, source)
    assert not fourth.from_cache
    assert weights_lib.load_weights(tiny_model(), TINY, source).from_cache


def test_an_upgrade_converts_again(tmp_path, monkeypatch):
    """A cache entry written by another keras-resnext or Keras version is not read."""
    import keras

    source = os.path.join(FIXTURES, f"{TINY}.safetensors")
    first = weights_lib.load_weights(tiny_model(), TINY, source)
    assert first.cache_path.endswith(
        f"-kr{keras_resnext.__version__}-k{keras.__version__}.weights.h5")
    for module, version, named in ((keras_resnext, "99.0.0", "-kr99.0.0-"),
                                   (keras, "3.99.0", "-k3.99.0.weights.h5")):
        with monkeypatch.context() as m:
            m.setattr(module, "__version__", version)
            upgraded = weights_lib.load_weights(tiny_model(), TINY, source)
        assert not upgraded.from_cache and upgraded.cache_path != first.cache_path
        assert named in upgraded.cache_path
    assert len(files_under(tmp_path / "converted")) == 3
    assert weights_lib.load_weights(tiny_model(), TINY, source).from_cache


def test_build_accepts_a_safetensors_path_and_keras_weights(tmp_path):
    source = os.path.join(FIXTURES, f"{TINY}.safetensors")
    model = tiny_model(weights=source)
    assert tiny_logits(model) <= 1e-4
    keras_path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(keras_path)
    reloaded = tiny_model(weights=keras_path)
    assert tiny_logits(reloaded) <= 1e-4


def test_corrupt_keras_weights_name_the_file(tmp_path):
    model = tiny_model()
    good = str(tmp_path / "good.weights.h5")
    model.save_weights(good)
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(open(good, "rb").read()[:4000])
    empty = tmp_path / "empty.weights.h5"
    empty.write_bytes(b"")
    for path in (truncated, empty):
        with pytest.raises(ValueError, match=f"Keras weights file '{path}'.*truncated or corrupt"):
            weights_lib.load_weights(model, TINY, str(path))


def test_new_head_keeps_its_classifier():
    source = os.path.join(FIXTURES, f"{TINY}.safetensors")
    model = tiny_model(classes=3)
    with pytest.raises(ValueError, match=r"'fc\.weight'.*\(10, 512\).*\(3, 512\)"):
        weights_lib.load_weights(model, TINY, source)
    result = weights_lib.load_weights(model, TINY, source, skip_head=True)
    assert result.cache_path is None  # a random head is never cached
    assert model.get_layer("predictions").kernel.shape == (512, 3)


def test_corrupt_and_foreign_files_leave_no_cache(tmp_path, tiny_bytes):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_bytes[: len(tiny_bytes) // 3])
    with pytest.raises(ValueError, match=r"truncated\.safetensors.*truncated or corrupt"):
        weights_lib.load_weights(tiny_model(), TINY, str(truncated))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        weights_lib.load_weights(tiny_model(), TINY, str(garbage))
    # resnext_tiny_d's file into resnext_tiny: the first mismatch is named.
    foreign = os.path.join(FIXTURES, "resnext_tiny_d.safetensors")
    with pytest.raises(ValueError, match=r"no tensor 'conv1\.weight'"):
        weights_lib.load_weights(tiny_model(), TINY, foreign)
    # A deeper model: the first tensor the file lacks is named.
    deeper = dict(tiny_config(), layers=[1, 2, 2, 1])
    with pytest.raises(ValueError, match=r"no tensor 'layer3\.1\.conv1\.weight'"):
        weights_lib.load_weights(
            keras_resnext.build(keras_resnext.Spec.from_config(deeper), classes=10),
            TINY, os.path.join(FIXTURES, f"{TINY}.safetensors"))
    # Same names, other widths (cardinality 2): the first shape mismatch.
    narrow = dict(tiny_config(), cardinality=2)
    with pytest.raises(ValueError, match=(
            r"'layer1\.0\.conv1\.weight'.*has \(8, 64, 1, 1\).*needs \(4, 64, 1, 1\)")):
        weights_lib.load_weights(
            keras_resnext.build(keras_resnext.Spec.from_config(narrow), classes=10),
            TINY, os.path.join(FIXTURES, f"{TINY}.safetensors"))
    assert files_under(tmp_path / "converted") == []


# ---------------------------------------------------------------- hub


def test_hub_download_fills_the_real_cache_then_works_offline(tmp_path, monkeypatch,
                                                             tiny_bytes):
    registry = tiny_registry()
    with FakeHub({("test/tiny.a_in1k", "model.safetensors"): tiny_bytes}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        model = tiny_model()
        result = weights_lib.load_weights(model, "tiny", "imagenet", registry=registry)
        assert ("GET", "/test/tiny.a_in1k/resolve/main/model.safetensors") in fake.requests
    assert result.entry.tag == "a_in1k" and not result.from_cache
    assert tiny_logits(model) <= 1e-4
    # huggingface_hub's own layout: blobs named by the ETag, a snapshot link.
    blob = hashlib.sha256(tiny_bytes).hexdigest()
    hub_files = files_under(tmp_path / "hub")
    assert f"models--test--tiny.a_in1k/blobs/{blob}" in hub_files
    assert result.source.startswith(str(tmp_path / "hub"))
    assert result.source.endswith("snapshots/c0ffee" + "0" * 34 + "/model.safetensors")

    # Server gone, endpoint refusing connections, offline mode: all served by the cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = tiny_model()
    second = weights_lib.load_weights(offline, "tiny", "a_in1k", registry=registry)
    assert second.from_cache and second.source == result.source
    assert tiny_logits(offline) <= 1e-4
    # Even the converted cache removed: converts again from the hub cache.
    os.remove(second.cache_path)
    third = weights_lib.load_weights(tiny_model(), "tiny", "a_in1k", registry=registry)
    assert not third.from_cache and os.path.isfile(third.cache_path)
    # hf-hub:<repo> names the same cached file.
    fourth = weights_lib.load_weights(tiny_model(), "tiny", "hf-hub:test/tiny.a_in1k",
                                      registry=registry)
    assert fourth.from_cache and fourth.entry.tag == "a_in1k"


def test_no_network_fails_fast_with_instructions(tmp_path, monkeypatch):
    # The autouse fixture points HF_ENDPOINT at a closed loopback port.
    # huggingface_hub alone retries 5 times with backoff (~25 s measured);
    # hub.download makes one request and stops.
    registry = tiny_registry()
    with pytest.raises(FileNotFoundError) as info:
        weights_lib.load_weights(tiny_model(), "tiny", "imagenet", registry=registry)
    message = str(info.value)
    assert "ConnectError" in message and "No network?" in message
    assert "hf download test/tiny.a_in1k model.safetensors --local-dir DIR" in message
    assert "weights='DIR/model.safetensors'" in message and "HF_HUB_OFFLINE=1" in message

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"HF_HUB_OFFLINE is set and .*not in the hub cache"):
        weights_lib.load_weights(tiny_model(), "tiny", "a_in1k", registry=registry)
    assert files_under(tmp_path / "converted") == []
    assert not any("blobs" in f for f in files_under(tmp_path / "hub"))


def test_silent_server_times_out(monkeypatch):
    # Accepts connections (kernel backlog) and never answers: the hang case.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(FileNotFoundError, match=r"within 1 s \(\w*Timeout"):
            hub.download("test/tiny.a_in1k", timeout=1)


def test_hub_errors_and_licenses(tmp_path, monkeypatch, tiny_bytes):
    registry = tiny_registry()
    truncated = tiny_bytes[: len(tiny_bytes) // 2]
    files = {("test/tiny.a_in1k", "model.safetensors"): tiny_bytes,
             ("test/tiny.nc_in1k", "model.safetensors"): tiny_bytes,
             ("test/broken", "model.safetensors"): truncated}
    with FakeHub(files) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # permissive default: no warning
            weights_lib.load_weights(tiny_model(), "tiny", "imagenet", registry=registry)
        with pytest.warns(UserWarning, match=r"tiny\.nc_in1k are licensed cc-by-nc-4\.0: non-commercial"):
            weights_lib.load_weights(tiny_model(), "tiny", "nc_in1k", registry=registry)
        with pytest.raises(ValueError, match=r"hub has no 'model\.safetensors' of hub repository 'test/tiny\.gone_in1k'"):
            weights_lib.load_weights(tiny_model(), "tiny", "gone_in1k", registry=registry)
        with pytest.raises(ValueError, match=r"Valid tags: 'imagenet' \(= 'a_in1k'\), 'a_in1k', 'nc_in1k'"):
            weights_lib.load_weights(tiny_model(), "tiny", "b_in1k", registry=registry)
        converted_before = files_under(tmp_path / "converted")
        with pytest.raises(ValueError, match="truncated or corrupt"):
            weights_lib.load_weights(tiny_model(), "tiny", "hf-hub:test/broken")
    assert files_under(tmp_path / "converted") == converted_before
    assert len(converted_before) == 2  # a_in1k, nc_in1k (same bytes, one file per tag)


def test_unspecified_license_warns_once_per_process():
    entry = pretrained.get_pretrained("res2net50_26w_4s")  # "imagenet" = in1k
    assert entry.license == "unknown" and not entry.non_commercial
    weights_lib._UNSPECIFIED_LICENSE_WARNED.discard(entry.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights_lib.warn_license(entry)
        weights_lib.warn_license(entry)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no license specified" in messages[0]
