"""The test suite's own rules: shared code in helpers.py, the dtype policy as a fixture."""

import ast
import glob
import os
import subprocess
import sys
import textwrap

from helpers import TESTS


def test_no_test_module_imports_conftest_or_another_test_module():
    offenders = []
    for path in sorted(glob.glob(os.path.join(TESTS, "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{os.path.basename(path)}:{node.lineno} imports {name}"
                          for name in names
                          if name == "conftest" or name.startswith("test_")]
    assert offenders == []


def test_dtype_policy_fixture_restores_the_previous_policy(tmp_path):
    # Run as its own pytest session, so the restore after a failing test is seen too.
    (tmp_path / "test_policy.py").write_text(textwrap.dedent("""
        import keras

        def test_sets(dtype_policy):
            dtype_policy("mixed_float16")
            assert keras.config.dtype_policy().name == "mixed_float16"

        def test_restored():
            assert keras.config.dtype_policy().name == "float32"

        def test_fails_after_setting(dtype_policy):
            dtype_policy("bfloat16")
            raise RuntimeError("a failing test")

        def test_restored_after_a_failure():
            assert keras.config.dtype_policy().name == "float32"
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "-q",
         str(tmp_path / "test_policy.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "1 failed, 3 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_fails_after_setting" in result.stdout
