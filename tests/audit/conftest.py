"""Audit tools run the way a reviewer or CI runs them: the `regate` command (in-process), with
the real OPA (the `opa_bin` fixture fails the run when it is missing)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from regate.cli import main


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def regate(opa_bin, capsys, monkeypatch):
    """regate(*argv) -> Run: the command's exit code, stdout and stderr."""
    monkeypatch.setenv("REGATE_OPA_BIN", opa_bin)

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def config_file(tmp_path):
    """config_file(name, yaml_text) -> the path of a config written under tmp_path."""
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture
def pair(regate, config_file):
    """pair(old_text, new_text, *options) -> the Run of `regate diff old new *options` (both
    configs written under tmp_path)."""
    def run(old: str, new: str, *options: str):
        return regate("diff", config_file("old.yaml", old), config_file("new.yaml", new), *options)

    return run
