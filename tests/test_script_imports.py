"""Scripts import ``keras_resnext.cli`` normally; the library does not import the CLI."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("applications/benchmark.py", "applications/classify.py", "applications/export.py",
           "applications/deploy_benchmark.py", "training/fit.py", "training/evaluate.py")
# benchmark.py's --backend must be set before the package (which checks the backend at
# import) loads: it imports keras_resnext.cli in main().
CLI_DEFERRED = {"applications/benchmark.py": "deferred"}


def run_python(code):
    """``code`` in a fresh interpreter with this tree first on the path; its stdout words."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


@pytest.mark.parametrize("script", SCRIPTS)
def test_loading_a_script_starts_no_tensorflow(script):
    path = os.path.join(ROOT, script)
    assert run_python(
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('app', {path!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(getattr(getattr(module, 'cli', None), '__name__', 'deferred'),\n"
        "      'tensorflow' in sys.modules)"
    ) == [CLI_DEFERRED.get(script, "keras_resnext.cli"), "False"]


def test_the_training_recipes_do_not_import_the_cli():
    assert run_python(
        "import sys\nfrom keras_resnext.training import recipes\n"
        "print(recipes.DEFAULT_RECIPE in recipes.RECIPES, 'keras_resnext.cli' in sys.modules)"
    ) == ["True", "False"]


def test_recipe_overrides_parse_every_kind():
    from keras_resnext import cli
    from keras_resnext.training import recipes

    parser = cli.ArgumentParser()
    parser.add_argument("--recipe", default=recipes.DEFAULT_RECIPE)
    cli.add_override_arguments(parser, recipes.recipe_flag_types(), "recipe overrides")
    args = parser.parse_args(["--lr", "0.5", "--milestones", "3,6", "--nesterov", "false",
                              "--epochs", "8", "--optimizer", "adamw"])
    recipe = recipes.recipe_from_args(args)
    assert (recipe.lr, recipe.milestones, recipe.nesterov, recipe.epochs,
            recipe.optimizer) == (0.5, (3, 6), False, 8, "adamw")
    default = recipes.recipe_from_args(parser.parse_args([]))
    assert default == recipes.get_recipe(recipes.DEFAULT_RECIPE)
    with pytest.raises(SystemExit):
        parser.parse_args(["--nesterov", "maybe"])
