"""What a new user meets first (issue 21, item 6): usage errors as one line, help
with examples that parse, and options that say what they accept.

No model is run here: only click's parsing and the rendered help.
"""
import glob
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ddpm_codec_cli.main import cli
from ddpm_codec_cli.options import MODEL_HELP

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("ddpm-codec")
WITH_EXAMPLES = ["compress", "decompress", "nll", "rd-curve", "bench", "train", "train-groups", "sample",
                 "merge", "export", "fit-chain"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")


def one_line_error(res, fragment):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and "Usage:" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ddpm-codec: error: ") and fragment in lines[0], lines[0]
    return lines[0]


def help_text(name):
    res = run(name, "--help")
    assert res.exit_code == 0, res.output
    return res.stdout


def params(name):
    return {p.name: p for p in cli.commands[name].params}


# ---- 1. usage errors: one line, exit code 2 ---------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["compress"], "Missing argument 'INPUTS...'"),
    (["decompress"], "Missing argument 'STREAM'"),
    (["merge"], "Missing argument"),
    (["export"], "Missing argument 'RUN_DIR'"),
    (["fit-chain"], "Missing option '--to'"),
    (["compress", "a.png", "--tiles", "some"], "Invalid value for '--tiles'"),
    (["compress", "a.png", "--steps", "many"], "Invalid value for '--steps'"),
    (["decompress", "s.ddpmc", "--bogus"], "No such option"),
    (["--bogus"], "No such option"),
    (["bogus"], "No such command 'bogus'"),
    (["nll", "--shard", "2/2"], "shard 2/2"),            # a BadParameter raised by the command itself
])
def test_usage_errors_are_one_line(args, fragment):
    line = one_line_error(run(*args), fragment)
    assert "--help" in line                                # says where the usage is


def test_usage_error_from_the_console_script():
    if not EXE.exists():
        pytest.skip(f"{EXE} not installed")
    p = subprocess.run([str(EXE), "compress"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["ddpm-codec: error: Missing argument 'INPUTS...' "
                                     "(see 'ddpm-codec compress --help')"]


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["compress", "--help"], ["fit-chain", "-h"]])
def test_help_still_works(args):
    res = run(*args)
    assert res.exit_code == 0 and res.stdout.startswith("Usage: ddpm-codec"), res.output


def test_no_arguments_show_the_help():
    res = run()
    assert "Usage: ddpm-codec" in res.output and "Commands:" in res.output and "error" not in res.output


# ---- 2. every command shows examples that parse -------------------------------------
def examples(name):
    """The command lines under "Examples:" in the rendered help, each kept as its own line."""
    text = help_text(name)
    assert "\n  Examples:\n" in text, text
    block = text.split("\n  Examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    assert lines and all(ln.startswith("    ddpm-codec ") for ln in lines), block   # \b: not rewrapped
    return [shlex.split(ln, comments=True) for ln in lines]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_help_has_examples_that_parse(name, monkeypatch):
    cmd = cli.commands[name]
    for p in cmd.params:                               # a run folder or shard an earlier example writes
        if isinstance(p.type, click.Path):
            monkeypatch.setattr(p.type, "exists", False)
    for argv in examples(name):
        assert argv[:2] == ["ddpm-codec", name], argv
        args = []
        for a in argv[2:]:
            found = sorted(glob.glob(str(ROOT / a))) if any(c in a for c in "*?[") else []
            assert found or not any(c in a for c in "*?["), f"{a}: matches nothing in the repository"
            args += found or [a]
        cmd.make_context(name, args)                   # every option and value is one the command takes


def test_quick_start_example_uses_the_shipped_images():
    assert glob.glob(str(ROOT / "examples" / "*.png"))
    assert ["ddpm-codec", "compress", "examples/*.png", "-o", "examples.ddpmc"] in examples("compress")


# ---- 3. --model says what it accepts ---------------------------------------------
def test_every_model_option_says_what_it_accepts():
    having = {name for name, cmd in cli.commands.items()
              if any("--model" in p.opts for p in cmd.params)}
    assert having >= {"compress", "decompress", "bench", "nll", "rd-curve", "sample", "fit-chain"}
    for name in having:
        [opt] = [p for p in cli.commands[name].params if "--model" in p.opts]
        assert opt.help == MODEL_HELP, name
        assert opt.default == "default"
        assert "'default' (the shipped one) or PATH of" in " ".join(help_text(name).split()), name
    assert MODEL_HELP == "model: 'default' (the shipped one) or PATH of PATH.safetensors + PATH.json"


# ---- 4. --split lists its choices ------------------------------------------------
def test_every_split_option_is_a_choice_of_train_and_test():
    having = {name for name, cmd in cli.commands.items() if "split" in params(name)}
    assert having == {"nll", "rd-curve", "bench"}
    for name in having:
        opt = params(name)["split"]
        assert isinstance(opt.type, click.Choice) and list(opt.type.choices) == ["train", "test"], name
        assert opt.default == "test"
        assert "--split [train|test]" in help_text(name), name


@pytest.mark.parametrize("name", ["nll", "rd-curve", "bench"])
def test_an_unknown_split_is_refused_before_any_work(name):
    one_line_error(run(name, "--split", "val", "--model", "no-such-model"), "'val' is not one of 'train', 'test'")


# ---- 5. fit-chain's time grid is not compress's --grid -------------------------------
def test_fit_chain_time_grid_is_named_apart_from_the_bin_width():
    text = help_text("fit-chain")
    assert "--time-grid N" in text and "--grid" not in text
    assert "--grid FLOAT" in help_text("compress") and "bin width" in help_text("compress")
    ctx = cli.commands["fit-chain"].make_context("fit-chain", ["--to", "x", "--time-grid", "8"])
    assert ctx.params["time_grid"] == 8 and ctx.params["old_grid"] is None
    ctx = cli.commands["fit-chain"].make_context("fit-chain", ["--to", "x", "--grid", "8"])   # the old spelling
    assert ctx.params["old_grid"] == 8
    one_line_error(run("fit-chain", "--to", "x", "--time-grid", "0"), "--time-grid")


# ---- 6. the heavy commands default to the model's chain ------------------------------
@pytest.mark.parametrize("name", ["nll", "rd-curve", "sample"])
def test_steps_default_to_the_models_recommended_chain(name):
    opt = params(name)["steps"]
    assert opt.default is None
    assert "recommended_steps" in " ".join(help_text(name).split()), name
    assert "1000" not in opt.get_help_record(click.Context(cli.commands[name]))[1]


def test_the_help_names_the_shipped_models_chain_rightly():
    import json

    from ddpm_codec_cli.options import RECOMMENDED
    meta = json.loads((ROOT / "ddpm_codec" / "weights" / "default.json").read_text())
    assert f"{meta['recommended_steps']} for the shipped one" in RECOMMENDED
