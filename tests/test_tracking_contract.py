"""Every MLflow name stride writes or reads back lives in `stride.tracking.contract`: the layers that talk to
MLflow import it instead of spelling a tag, artifact, experiment or alias again."""

from __future__ import annotations

import ast
from pathlib import Path

from stride.tracking import contract

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("tracking", "registry", "tuning", "pipelines", "benchmarking", "stride/training")
NAME_KINDS = ("_TAG", "_PREFIX", "_ARTIFACT", "_EXPERIMENT", "_METRIC", "_PARAM", "_FOLDER", "_ALIAS", "_SUFFIX")
CONTRACT_NAMES = {value: name for name, value in vars(contract).items()
                  if name.endswith(NAME_KINDS) and isinstance(value, str)}


def string_constants(path: Path):
    """(line, text) of every string literal, f-string parts included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def test_no_layer_spells_a_contract_name_or_an_unlisted_stride_tag():
    contract_file = ROOT / "tracking" / "contract.py"
    found = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if path == contract_file:
                continue
            for line, text in string_constants(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                if text in CONTRACT_NAMES:
                    found.append(f"{where}: {text!r} is contract.{CONTRACT_NAMES[text]}")
                elif text.startswith("stride.") and " " not in text and not is_module(text):
                    found.append(f"{where}: {text!r} is a stride MLflow name missing from the contract")
    assert not found, "\n".join(found)


def test_contract_names_are_unique():
    names = [value for name, value in vars(contract).items() if name.endswith(NAME_KINDS) and isinstance(value, str)]
    assert len(names) == len(set(names))
