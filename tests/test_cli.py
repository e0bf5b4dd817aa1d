"""The `mnist-keras3` console script (mnist_keras3/cli.py) and the flags every command shares:
one subcommand per `python -m mnist_keras3.<name>`, the same main under the same error handler,
and a --no-... form for every switch."""

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BACKEND, REPO

from mnist_keras3 import cli
from mnist_keras3.errors import UsageError

pytestmark = pytest.mark.once  # argument handling and dispatch: never imports keras

EXPECTED = ["train", "evaluate", "predict", "export", "serve", "bench", "parity"]


def env():
    """A subprocess imports this checkout's package, whatever install made the scripts."""
    return {**os.environ, "KERAS_BACKEND": BACKEND, "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_help_lists_every_command_and_imports_no_framework():
    code = ("import sys\nfrom mnist_keras3 import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\nprint('imported:', sorted({'keras', 'torch', 'jax', 'tensorflow'} & "
            "set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert listed == EXPECTED, done.stdout
    assert "exit 0" in done.stdout and "imported: []" in done.stdout


@pytest.mark.parametrize("name", EXPECTED)
def test_each_subcommand_is_its_python_m_module(name):
    """`mnist-keras3 NAME` runs the very main() that `python -m mnist_keras3.NAME` runs."""
    module = importlib.import_module(f"mnist_keras3.{name}")
    if hasattr(module, "__path__"):  # a package: python -m runs its __main__
        module = importlib.import_module(f"mnist_keras3.{name}.__main__")
    assert importlib.import_module(cli.COMMANDS[name][0]).main is module.main


@pytest.mark.parametrize("name", EXPECTED)
def test_each_subcommand_passes_its_arguments_and_runs_under_the_error_handler(name, monkeypatch, capsys):
    module = importlib.import_module(cli.COMMANDS[name][0])
    seen = []

    def fake_main(argv):
        seen.append(argv)
        raise UsageError(f"Expected a good flag. Received: argv={argv}")

    monkeypatch.setattr(module, "main", fake_main)
    assert cli.main([name, "x", "--flag", 3]) == 2  # run_cli: the UsageError's exit code
    assert seen == [["x", "--flag", "3"]]
    assert capsys.readouterr().err == "error: Expected a good flag. Received: argv=['x', '--flag', '3']\n"


@pytest.mark.parametrize("argv,code", [([], 2), (["trian"], 2), (["--version"], 0), (["--help"], 0)])
def test_no_command_or_an_unknown_one_is_a_usage_error(argv, code, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == code
    if argv == ["trian"]:
        assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_a_config_switch_can_be_turned_off_and_on_from_the_command_line(tmp_path, capsys):
    on, off = tmp_path / "on.toml", tmp_path / "off.toml"
    on.write_text("tensorboard = true\n")
    off.write_text("tensorboard = false\n")
    for config, flags, expected in ((on, [], "true"), (on, ["--no-tensorboard"], "false"),
                                    (off, ["--tensorboard"], "true"), (off, [], "false")):
        assert cli.main(["train", "--config", config, *flags, "--print-config"]) == 0
        assert f"tensorboard = {expected}\n" in capsys.readouterr().out, (config.name, flags)


def parsers():
    """Every command's argparse parser (parity's worker and check too), caught as it parses."""
    from mnist_keras3 import evaluate, export, predict, serve, train
    from mnist_keras3.bench import report as bench
    from mnist_keras3.parity import report as parity

    class Caught(Exception):
        pass

    def catch(self, *args, **kwargs):
        raise Caught(self)

    found = {}
    calls = {"train": train.parse_args, "evaluate": evaluate.parse_args, "predict": predict.parse_args,
             "export": export.parse_args, "serve": serve.parse_args, "bench": bench.parse_args,
             "parity": parity.parse_args, "parity worker": lambda a: parity.parse_sub_args("worker", a),
             "parity check": lambda a: parity.parse_sub_args("check", a)}
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        for name, parse in calls.items():
            try:
                parse([])
            except Caught as e:
                found[name] = e.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    return found


def test_every_switch_has_a_no_form():
    found = parsers()
    assert sorted(found) == sorted(EXPECTED + ["parity worker", "parity check"])
    switches = {name: [a for a in p._actions if a.nargs == 0 and not isinstance(a, argparse._HelpAction)]
                for name, p in found.items()}
    assert "--tensorboard" in [s for a in switches["train"] for s in a.option_strings]
    lacking = [f"{name} {a.option_strings[0]}" for name, actions in switches.items() for a in actions
               if not any(s.startswith("--no-") for s in a.option_strings)]
    assert lacking == []


def test_the_installed_console_scripts_run_their_commands(tmp_path):
    bin_dir = Path(sys.executable).parent
    scripts = [bin_dir / "mnist-keras3", bin_dir / "mnist-keras3-train"]
    missing = [str(s) for s in scripts if not s.is_file()]
    if missing:
        pytest.skip(f"console scripts not installed: {', '.join(missing)} (pip install -e .)")
    helped = subprocess.run([str(scripts[0]), "--help"], capture_output=True, text=True, timeout=120, env=env())
    assert helped.returncode == 0 and all(f"    {name} " in helped.stdout for name in EXPECTED), helped.stdout
    # Both scripts go through the error handler: one line and the usage exit code, no traceback.
    for argv in ([str(scripts[0]), "train"], [str(scripts[1])]):
        done = subprocess.run([*argv, "--resume", str(tmp_path)], capture_output=True, text=True, timeout=120,
                              env=env())
        assert done.returncode == 2 and done.stderr == (
            f"error: {tmp_path} is not a run folder (no config.toml). Pass a folder made by train.\n"), argv
