"""``--onednn auto|on|off``: the programs' oneDNN choice, made before TensorFlow starts.

Each check runs in a fresh interpreter that loads ``keras_resnext/cli.py`` from
its file (as the programs do) with a fake ``/proc/cpuinfo``
(``KERAS_RESNEXT_CPUINFO``), so the host's CPU and its TensorFlow default play
no part. The programs themselves are run once each at the end.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "keras_resnext", "cli.py")

AVX2_EPYC = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2"
SKYLAKE_X = AVX2_EPYC + " avx512f avx512dq avx512cd avx512bw avx512vl"
SAPPHIRE_RAPIDS = SKYLAKE_X + " avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ALDER_LAKE = AVX2_EPYC + " avx_vnni"
OLD_X86 = "fpu sse sse2 avx"


def choose(tmp_path, argv, flags, user=None):
    """``choose_onednn(argv)`` in a fresh Python; returns ``(choice, environment value)``."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: fake\nflags\t\t: {flags}\n\n"
                       f"processor\t: 1\nflags\t\t: {flags}\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["KERAS_RESNEXT_CPUINFO"] = str(cpuinfo)
    if user is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user
    code = (
        "import json, os, runpy, sys\n"
        f"cli = runpy.run_path({CLI!r})\n"
        f"choice = cli['choose_onednn']({argv!r})\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(json.dumps([choice, os.environ.get('TF_ENABLE_ONEDNN_OPTS'),\n"
        "                  cli['onednn_line'](choice)]))\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    choice, value, line = json.loads(result.stdout)
    assert line.startswith("oneDNN: ") and "\n" not in line
    return choice, value


@pytest.mark.parametrize("flags", [AVX2_EPYC, SKYLAKE_X])
def test_auto_turns_onednn_on_where_tensorflow_leaves_it_off(tmp_path, flags):
    choice, value = choose(tmp_path, [], flags)
    assert value == "1"
    assert choice == {"mode": "auto", "setting": "1", "reason": choice["reason"]}


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, ALDER_LAKE, OLD_X86, ""])
def test_auto_leaves_tensorflow_default_elsewhere(tmp_path, flags):
    """AVX-512 VNNI/BF16, AVX-VNNI or AMX: TensorFlow's own default is on; no AVX2: left alone."""
    choice, value = choose(tmp_path, ["--onednn", "auto"], flags)
    assert value is None and choice["setting"] is None


def test_unreadable_cpuinfo_leaves_the_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["KERAS_RESNEXT_CPUINFO"] = str(tmp_path / "missing")
    code = (f"import runpy; cli = runpy.run_path({CLI!r}); "
            "print(cli['choose_onednn']([])['setting'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "None", out.stderr


@pytest.mark.parametrize("user", ["0", "1", "false"])
@pytest.mark.parametrize("flags", [AVX2_EPYC, SAPPHIRE_RAPIDS])
def test_the_users_setting_wins_over_auto(tmp_path, user, flags):
    choice, value = choose(tmp_path, ["--model-dir", "x"], flags, user=user)
    assert value == user and choice["setting"] == user
    assert "set by the user" in choice["reason"]


@pytest.mark.parametrize("argv,mode,expected", [
    (["--onednn", "off"], "off", "0"), (["--onednn=on"], "on", "1"),
    (["--x", "1", "--onednn", "off"], "off", "0")])
@pytest.mark.parametrize("user", [None, "1", "0"])
def test_explicit_flag_sets_it(tmp_path, argv, mode, expected, user):
    """``--onednn on|off`` is the user's choice too, made on the command line: it wins."""
    choice, value = choose(tmp_path, argv, SAPPHIRE_RAPIDS, user=user)
    assert value == expected
    assert choice == {"mode": mode, "setting": expected, "reason": f"--onednn {mode}"}


def test_bad_mode_is_left_to_argparse(tmp_path):
    """A bad value changes nothing here; the program's parser reports it in one line."""
    choice, value = choose(tmp_path, ["--onednn", "maybe"], AVX2_EPYC, user="0")
    assert value == "0" and choice["mode"] == "auto"


def run_program(tmp_path, script, *args, flags=AVX2_EPYC):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t\t: {flags}\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(KERAS_RESNEXT_CPUINFO=str(cpuinfo), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_fit_prints_and_records_the_choice_and_tensorflow_follows_it(tmp_path):
    """An AVX2-only CPU: oneDNN on in the training process, one line, in run.json."""
    run_dir = tmp_path / "run"
    proc = run_program(tmp_path, "training/fit.py", "--model-dir", run_dir, "--strategy",
                       "default", "--verbose", "0", "--no-export", "--epochs", "1",
                       "--steps-per-epoch", "1", "--val-steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("oneDNN:")]
    assert lines == ["oneDNN: on (auto: x86 CPU without AVX-512 VNNI/BF16, AVX-VNNI or AMX)"]
    with open(run_dir / "run.json", encoding="utf-8") as f:
        assert json.load(f)["onednn"] == {
            "mode": "auto", "setting": "1",
            "reason": "auto: x86 CPU without AVX-512 VNNI/BF16, AVX-VNNI or AMX"}


def test_benchmark_prints_the_choice_before_tensorflow_starts(tmp_path):
    """``--onednn off``: the benchmark's TensorFlow runs without oneDNN (checked by TF itself)."""
    proc = run_program(tmp_path, "applications/benchmark.py", "--onednn", "off", "--size",
                       "32", "--batch", "1", "--rounds", "1", "--steps", "1", "--modes",
                       "infer", "--models", "--skip-keras-grouped", "--no-memory",
                       "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "oneDNN: off (--onednn off)"
    # The table's heading, from TensorFlow's own IsMklEnabled().
    assert "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)" in proc.stdout


def test_bad_mode_is_one_line(tmp_path):
    proc = run_program(tmp_path, "applications/benchmark.py", "--onednn", "maybe")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--onednn" in lines[0] and "maybe" in lines[0], proc.stderr
