"""Attacks behind one interface (vitpe.attacks.registry): every configured name is registered with its
kind, a wrong name fails in one line naming the known ones, and the attack stage never imports the
report. (The metrics JSON keeping its keys and values: test_attacks_cli.py.)"""
from __future__ import annotations

import ast

import pytest
import yaml

from conftest import ROOT
from vitpe.attacks.registry import ATTACKS, Attack, attack_class, attacks_of_kind
from vitpe.attacks.runner import attack_settings
from vitpe.cli import build_parser
from vitpe.config import load_params
from vitpe.errors import ConfigError


def test_every_configured_attack_is_registered_with_its_kind():
    params = load_params(ROOT / "params.yaml")
    for kind in ("optimisation", "closed_form"):
        for name in params["attacks"][kind]:
            cls = attack_class(name)
            assert issubclass(cls, Attack) and cls.name == name and cls.kind == kind
    assert set(attacks_of_kind("optimisation")) == {"inverting_gradients", "gradvit"}
    assert set(attacks_of_kind("closed_form")) == {"april", "april_adaptive", "pe_gradient", "pe_gradient_adaptive"}
    # the schema's names are the registry's (a new attack is registered and allowed together)
    schema = yaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())
    listed = schema["properties"]["attacks"]["properties"]
    lists = ("optimisation", "closed_form", "standard_closed_form")
    assert {n for kind in lists for n in listed[kind]["items"]["enum"]} == set(ATTACKS)


def test_a_wrong_attack_name_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError) as info:
        attack_class("dlg", "params.yaml: attacks.optimisation")
    assert str(info.value) == ("params.yaml: attacks.optimisation: unknown attack 'dlg' "
                               "(known: inverting_gradients, gradvit, april, april_adaptive, pe_gradient, "
                               "pe_gradient_adaptive)")
    params = load_params(ROOT / "params.yaml")
    swapped = {**params, "attacks": {**params["attacks"], "optimisation": ["april"]}}
    with pytest.raises(ConfigError, match="attacks.optimisation lists 'april', a closed_form attack"):
        attack_settings(swapped)


def test_the_attack_stage_never_imports_the_report_and_keeps_its_figure_commands():
    for path in (ROOT / "src/vitpe/attacks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("vitpe.report") for n in names), f"{path.name} imports {names}"
    parser = build_parser()
    for command in (["grid-figure", "--recon", "r", "--tables", "t.csv", "--attacks", "april", "--out", "g.png"],
                    ["psnr-figure", "--tables", "t.csv", "--out", "p.png"],
                    ["privacy-figure", "--attacks-metrics", "a.json", "--accuracy", "c.json", "--out", "v.png"]):
        assert parser.parse_args(["attack", *command]).func.__module__ == "vitpe.report.commands"

