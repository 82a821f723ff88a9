"""Everyday use of the CLI: --version, help text, and --set overrides (vitpe, Snakemake, DVC syntax)."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shlex

import pytest
import yaml

from conftest import ROOT, run
from vitpe.cli import build_parser, main
from vitpe.config import apply_overrides, load_params
from vitpe.errors import ConfigError

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser, {subcommand: its one-line help}) for the top level and every subcommand."""
    subactions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for a in subactions for c in a._choices_actions}
    yield path, parser, helps
    for action in subactions:
        for name, sub in action.choices.items():
            yield from _parsers(sub, (*path, name))


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vitpe {importlib.metadata.version('vitpe')}"


def test_every_command_and_option_has_plain_help():
    missing, markup = [], []
    for path, parser, helps in _parsers(build_parser()):
        missing += [" ".join((*path, name)) for name, text in helps.items() if not text]
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help:
                missing.append(" ".join((*path, *(action.option_strings or [action.dest]))))
        text = parser.format_help()
        markup += [f"{' '.join(path)}: {line.strip()}" for line in text.splitlines() if "``" in line or "%%" in line]
    assert len(list(_parsers(build_parser()))) > 30  # the walk reached every group's commands
    assert missing == [] and markup == []


def test_top_level_description_is_user_prose():
    text = " ".join(build_parser().format_help().split())
    assert "Reproduce the MJP" in text and "``" not in text and "--set KEY=VALUE" in text


def test_attack_compare_help_names_the_tables_the_workflow_writes():
    compare = dict((p, parser) for p, parser, _ in _parsers(build_parser()))[("attack", "compare")]
    text = " ".join(compare.format_help().split())  # undo argparse's line wrapping
    assert "bootstrap 95% CI" in text and "95%%" not in text
    named = re.search(r"\((results/attacks/\S+)\)", text).group(1)
    rules = (ROOT / "workflow/rules/attacks.smk").read_text()
    assert named == "results/attacks/<scale>/seed<N>/<exp>/images.csv"
    assert "f\"{seeded('attacks', seed)}/{exp}/images.csv\"" in rules  # the path attack merge writes


def test_dotted_override_sets_a_nested_key_with_yaml_typing():
    params = apply_overrides(PARAMS, ["supervised.mjp.jigsaw.ratio=0.3", "supervised.mjp.dal.head=linear"])
    assert params["supervised"]["mjp"]["jigsaw"] == {"mode": "mjp", "ratio": 0.3}
    assert isinstance(params["supervised"]["mjp"]["jigsaw"]["ratio"], float)
    assert params["supervised"]["mjp"]["dal"] == {"head": "linear", "weight": 0.01}
    assert "ratio" not in PARAMS["supervised"]["mjp"]["jigsaw"]  # the input is not modified (gamma: the scale's)
    # a new leaf is allowed (the schema checks it), and a dict value merges like a top-level one
    params = apply_overrides(PARAMS, ["supervised.mjp.recipe={epochs: 5}", "supervised.mjp.dal={weight: 0.1}"])
    assert params["supervised"]["mjp"]["recipe"] == {"epochs": 5}
    assert params["supervised"]["mjp"]["dal"] == {"head": "nonlinear", "weight": 0.1}


def test_top_level_and_dict_overrides_keep_working():
    params = load_params(ROOT / "params.yaml", ["scale=smoke", "seed=5"])
    assert params["scale"] == "smoke" and params["seed"] == 5
    merged = apply_overrides(PARAMS, ["scales={tiny: {supervised: {epochs: 99}}}"])
    assert merged["scales"]["tiny"]["supervised"]["epochs"] == 99
    assert merged["scales"]["tiny"]["model"] == PARAMS["scales"]["tiny"]["model"]  # merged, not replaced
    assert set(merged["scales"]) == set(PARAMS["scales"])


def test_dotted_override_reaches_an_inherited_scale_key():
    """``scales.smoke`` holds keys with dots (``supervised.epochs``): the dotted path matches them whole."""
    assert "supervised.epochs" in PARAMS["scales"]["smoke"]
    params = load_params(ROOT / "params.yaml", ["scales.smoke.supervised.epochs=2"])
    assert params["scales"]["smoke"]["supervised"]["epochs"] == 2


@pytest.mark.parametrize("override, expected", [
    ("supervised.mjpp.jigsaw.ratio=0.3", "override 'supervised.mjpp.jigsaw.ratio=0.3': params key "
                                         "'supervised.mjpp' does not exist"),
    ("seed.offset=1", f"override 'seed.offset=1': params key 'seed' holds {PARAMS['seed']!r}, not a mapping"),
    ("supervised..ratio=1", "override 'supervised..ratio=1': expected KEY=VALUE, KEY a params key or a dotted "
                            "path to one"),
])
def test_bad_dotted_override_names_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        apply_overrides(PARAMS, [override])
    assert str(err.value) == expected


def test_cli_bad_dotted_override_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "table.tex"
    code = main(["report", "table", "--set", "supervised.mjpp.jigsaw.ratio=0.3", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == "error: override 'supervised.mjpp.jigsaw.ratio=0.3': params key 'supervised.mjpp' does not exist"
    assert not out.exists()


def test_snakemake_configfile_override_reaches_jobs_typed(workflow_copy):
    """Snakemake's --config rejects dotted keys and reads nested values as strings; the README's
    equivalent, a --configfile, reaches every job as a typed --set."""
    (workflow_copy / "override.yaml").write_text("supervised:\n  mjp:\n    jigsaw:\n      ratio: 0.3\n")
    target = f"results/checkpoints/{PARAMS['scale']}/seed0/supervised/mjp/model.safetensors"
    dry = run(["snakemake", "-n", "-p", "--cores", "1", "--configfile", "override.yaml", "--", target],
              workflow_copy).stdout
    command = next(line for line in dry.splitlines() if "vitpe train supervised" in line and "--experiment mjp" in line)
    sets = [word.split("=", 1)[1] for word in shlex.split(command) if word.startswith("supervised=")]
    assert "seed=0" in shlex.split(command)  # the job's seed, from the {seed} wildcard
    assert [json.loads(s) for s in sets] == [{"mjp": {"jigsaw": {"ratio": 0.3}}}]
    args = shlex.split(command)
    overrides = [args[i + 1] for i, word in enumerate(args) if word == "--set"]
    params = load_params(workflow_copy / "params.yaml", overrides)
    assert params["supervised"]["mjp"]["jigsaw"] == {"mode": "mjp", "ratio": 0.3}

    dotted = run(["snakemake", "-n", "--cores", "1", "--config", "supervised.mjp.jigsaw.ratio=0.3"],
                 workflow_copy, check=False)
    assert dotted.returncode != 0  # why the README documents --configfile


def test_a_command_declared_with_the_shared_helpers_parses_runs_and_says_what_it_wrote(tmp_path, capsys):
    from pathlib import Path

    from vitpe.commands import add_command, add_weights_arguments, reports_writes, wrote

    @reports_writes
    def write(args: argparse.Namespace) -> str:
        args.out.write_text("{}")
        return "1 key"

    parser = argparse.ArgumentParser(prog="vitpe")
    p = add_command(parser.add_subparsers(dest="command", required=True), "demo", write, "a demo", params=True)
    add_weights_arguments(p, "model.safetensors", "metrics JSON to write")
    out = tmp_path / "metrics.json"
    args = parser.parse_args(["demo", "--weights", "w.safetensors", "--out", str(out), "--device", "cpu",
                              "--set", "seed=1"])
    assert (args.params, args.set, args.weights, args.device) == ("params.yaml", ["seed=1"], Path("w.safetensors"),
                                                                  "cpu")
    assert args.func(args) == 0 and out.read_text() == "{}"
    assert capsys.readouterr().out == f"wrote {out} (1 key)\n"
    assert wrote(["a.png", Path("a.pdf")]) == "wrote a.png, a.pdf"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--weights", "w", "--out", "o", "--device", "tpu"])
