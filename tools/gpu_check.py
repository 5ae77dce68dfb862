"""GPU check: fixture parity, the benchmark on JAX and PyTorch, and timm on the same GPU.

Run by tools/gpu_check.sh (which installs Keras and this package from wheels
first) on a machine with a CUDA GPU, JAX and PyTorch, and no TensorFlow::

    python tools/gpu_check.py --out "$OUT" [--stages parity torch timm jax]
    python tools/gpu_check.py --out /tmp/smoke --cpu-smoke   # the same code, tiny, on a CPU

Stages, in the order given (default: all, cheapest and most needed first):

- ``parity``: every test fixture (tiny timm models with reference logits)
  converted and run on JAX and on PyTorch, within 1e-4 of timm, with TF32
  off (``NVIDIA_TF32_OVERRIDE=0``); then tests/test_grouped_ops.py
  (GroupConv2D == Conv2D(groups), outputs and gradients) on both backends.
- ``torch`` / ``jax``: applications/benchmark.py on that backend, ResNeXt-50
  vs keras.applications' ResNet-50, ``float32`` and ``mixed_bfloat16``, batch
  64 and 128 (batch-1 latency with the first batch size only).
- ``timm``: timm's resnext50_32x4d and resnet50 in PyTorch on the same GPU
  (channels-last, eager), float32 and bfloat16 autocast, same batches.

Everything lands in ``--out`` as at most four files (the device tool returns
eight): ``gpu_check.md`` (all tables), ``gpu_check.json`` (all results),
``benchmarks.md`` (the benchmark's own page) and the log that gpu_check.sh
writes. They are rewritten after every stage, so a run cut short still
returns what it finished. This driver imports neither Keras nor a framework;
each stage runs in child processes with ``KERAS_BACKEND`` set.
"""

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("parity", "torch", "timm", "jax")
POLICIES = ("float32", "mixed_bfloat16")

# Fixture parity in one backend: prints one JSON line {fixture: max |logits - timm|}.
PARITY_CHILD = """
    import json, os, sys
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers import FIXTURE_FAMILIES, FIXTURES, fixture_model
    from keras_resnext import convert

    errors = {}
    for name in sorted(FIXTURE_FAMILIES)[:LIMIT]:
        model, state_dict = fixture_model(name)
        convert.torch_to_keras(model, state_dict)
        io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
        logits = model.predict(io["input_nhwc"], verbose=0)
        errors[name] = float(np.abs(logits - io["logits"]).max())
    print(json.dumps(errors))
"""

# timm (or, in --cpu-smoke without timm, a small stand-in) timed like the benchmark:
# interleaved rounds, median; prints one JSON line.
TIMM_CHILD = """
    import json, statistics, time
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        import timm
        make = lambda name: timm.create_model(name, pretrained=False)
        names = ["resnet50", "resnext50_32x4d"]
        version = timm.__version__
    except ImportError:
        if not SMOKE:
            raise
        make = lambda name: torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, stride=2), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, groups=8 if "x" in name else 1),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 1000))
        names, version = ["stand-in resnet", "stand-in resnext"], "not installed (stand-in)"

    def functions(model, dtype):
        model = model.to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        autocast = lambda: torch.autocast(device, dtype=torch.bfloat16,
                                          enabled=dtype == "bfloat16")
        def train(x, y):
            model.train()
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        def infer(x, y):
            model.eval()
            with torch.no_grad(), autocast():
                model(x)
        return {"train": train, "infer": infer}

    def timed(fn, x, y, steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    results = []
    for dtype in DTYPES:
        for batch in BATCHES:
            x = torch.randn(batch, 3, SIZE, SIZE, device=device).contiguous(
                memory_format=torch.channels_last)
            y = torch.randint(0, 1000, (batch,), device=device)
            fns = {(n, m): f for n in names for m, f in functions(make(n), dtype).items()}
            for f in fns.values():
                for _ in range(WARMUP):
                    timed(f, x, y, 1)
            times = {k: [] for k in fns}
            for _ in range(ROUNDS):
                for k, f in fns.items():
                    times[k].append(timed(f, x, y, STEPS))
            for (name, mode), t in times.items():
                results.append({"model": f"timm {name}", "dtype": dtype, "batch": batch,
                                "mode": mode, "img_per_s": batch / statistics.median(t)})
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU)"
    print(json.dumps({"timm": version, "torch": torch.__version__, "gpu": gpu,
                      "size": SIZE, "results": results}))
"""


def settings(smoke):
    """Sizes of every stage: the real run, or tiny ones for --cpu-smoke."""
    if smoke:
        return dict(size=32, batches=(2,), rounds=1, steps=1, warmup=1, latency_steps=1,
                    models=[], fixtures=2)
    return dict(size=224, batches=(64, 128), rounds=3, steps=5, warmup=2, latency_steps=10,
                models=[], fixtures=99)


def child(code, backend, *, timeout, env=None, log):
    """Runs ``code`` in a fresh Python with ``KERAS_BACKEND=backend``; its last line, parsed."""
    env = {**os.environ, **(env or {}), "KERAS_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        log(result.stderr[-4000:])
        raise RuntimeError(f"child on {backend} failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def stage_parity(results, cfg, log):
    no_tf32 = {"NVIDIA_TF32_OVERRIDE": "0"}
    for backend in ("jax", "torch"):
        code = PARITY_CHILD.replace("ROOT", repr(ROOT)).replace("LIMIT", str(cfg["fixtures"]))
        errors = child(code, backend, timeout=600, env=no_tf32, log=log)
        results["parity"][backend] = {"max_abs_error": errors,
                                      "passed": max(errors.values()) <= 1e-4}
        log(f"parity {backend}: max |logits - timm| {max(errors.values()):.2e} "
            f"over {len(errors)} fixtures")
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_grouped_ops.py"]
    if cfg["fixtures"] < 99:  # --cpu-smoke: one test, to prove the command runs
        tests += ["-k", "no_grouped_convolution"]
    env = {**os.environ, **no_tf32, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(tests, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    results["parity"]["grouped_ops_tests"] = {"exit": proc.returncode, "summary": summary}
    if proc.returncode != 0:
        log(proc.stdout[-4000:])
    log(f"tests/test_grouped_ops.py: {summary}")


def stage_benchmark(backend, results, cfg, scratch, log):
    for i, batch in enumerate(cfg["batches"]):
        for policy in POLICIES:
            # Batch-1 latency does not depend on the batch: measured with the first only.
            modes = ["train", "infer"] + (["latency"] if i == 0 else [])
            cmd = [sys.executable, os.path.join(ROOT, "applications", "benchmark.py"),
                   "--backend", backend, "--size", str(cfg["size"]), "--batch", str(batch),
                   "--rounds", str(cfg["rounds"]), "--steps", str(cfg["steps"]),
                   "--latency-steps", str(cfg["latency_steps"]), "--modes", *modes,
                   "--models", *cfg["models"], "--skip-keras-grouped", "--no-memory",
                   "--dtype-policy", policy, "--out", scratch]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                      [ROOT, os.environ.get("PYTHONPATH", "")])})
            log(f"benchmark {backend} {policy} batch {batch}: exit {proc.returncode} "
                f"({time.perf_counter() - start:.0f}s)")
            if proc.returncode != 0:
                log(proc.stderr[-4000:])
                raise RuntimeError(f"benchmark {backend} {policy} batch {batch} failed")
    results["benchmarks"] = [json.load(open(os.path.join(scratch, name), encoding="utf-8"))
                             for name in sorted(os.listdir(scratch))
                             if name.startswith("benchmarks_") and name.endswith(".json")]


def stage_timm(results, cfg, log):
    code = TIMM_CHILD
    for name, value in (("SMOKE", cfg["fixtures"] < 99), ("SIZE", cfg["size"]),
                        ("BATCHES", list(cfg["batches"])), ("ROUNDS", cfg["rounds"]),
                        ("STEPS", cfg["steps"]), ("WARMUP", cfg["warmup"]),
                        ("DTYPES", ["float32", "bfloat16"])):
        code = code.replace(name, repr(value))
    results["timm"] = child(code, "torch", timeout=900, log=log)
    log(f"timm {results['timm']['timm']}: {len(results['timm']['results'])} timings")


def timm_markdown(timm):
    rows = {}
    for r in timm["results"]:
        rows.setdefault((r["dtype"], r["batch"]), {})[r["model"], r["mode"]] = r["img_per_s"]
    names = sorted({r["model"] for r in timm["results"]})
    base = next(name for name in names if "resnext" not in name)  # ResNet-50
    lines = [f"## timm {timm['timm']} on {timm['gpu']} (PyTorch {timm['torch']}, "
             f"{timm['size']} px, channels-last, eager)", "",
             "| dtype | batch | model | train img/s | infer img/s |", "|---|---|---|---|---|"]
    for (dtype, batch), got in sorted(rows.items()):
        for name in names:
            cells = []
            for mode in ("train", "infer"):
                ratio = got[name, mode] / got[base, mode]
                cells.append(f"{got[name, mode]:.1f} ({ratio:.2f}x)")
            lines.append(f"| {dtype} | {batch} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out, results, scratch):
    """Rewrites gpu_check.json/.md (and the benchmark's own page) in ``out``."""
    # From its file: importing the package would start Keras (and its default backend).
    files = types.SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "keras_resnext",
                                                                "files.py")))
    files.atomic_write_text(os.path.join(out, "gpu_check.json"), json.dumps(results, indent=2))
    parts = ["# GPU check\n", f"Stages run: {', '.join(results['stages_done']) or 'none'}.\n"]
    for backend, got in results["parity"].items():
        if backend == "grouped_ops_tests":
            parts.append(f"tests/test_grouped_ops.py: {got['summary']} (exit {got['exit']}).\n")
        else:
            worst = max(got["max_abs_error"].values())
            parts.append(f"Fixture parity on {backend}: max |logits - timm| {worst:.2e} "
                         f"({'pass' if got['passed'] else 'FAIL'}, 1e-4, TF32 off).\n")
    if results.get("timm"):
        parts.append(timm_markdown(results["timm"]))
    page = os.path.join(scratch, "benchmarks.md")
    if os.path.isfile(page):
        shutil.copyfile(page, os.path.join(out, "benchmarks.md"))
        parts.append("Benchmark tables: benchmarks.md (beside this file).\n")
    files.atomic_write_text(os.path.join(out, "gpu_check.md"), "\n".join(parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes, no GPU needed: checks that every stage runs")
    args = parser.parse_args(argv)
    cfg = settings(args.cpu_smoke)
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="gpu_check_bench_")
    results = {"stages_done": [], "stages_failed": [], "parity": {}, "settings": cfg}

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    for stage in args.stages:
        start = time.perf_counter()
        try:
            if stage == "parity":
                stage_parity(results, cfg, log)
            elif stage == "timm":
                stage_timm(results, cfg, log)
            else:
                stage_benchmark(stage, results, cfg, scratch, log)
            results["stages_done"].append(stage)
        except Exception as error:  # noqa: BLE001: the next stage still runs
            results["stages_failed"].append(f"{stage}: {error}")
            log(f"stage {stage} FAILED: {error}")
        log(f"stage {stage}: {time.perf_counter() - start:.0f}s")
        write_results(args.out, results, scratch)
    return 1 if results["stages_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
