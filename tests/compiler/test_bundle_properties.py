"""Bundle properties: byte-for-byte determinism, manifest contents, no secrets."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile

from regate import compiler
from regate.cli import main
from regate.compiler.bundle import content_revision

from .conftest import ROOT

SECRET_CONFIG = """\
general_settings:
  master_key: sk-master-SECRET-1234
  enable_jwt_auth: true
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-upstream-SECRET-5678
      api_base: https://user:pw-SECRET-90@llm.internal/v1
  - model_name: az
    litellm_params:
      model: azure/prod
      api_key: os.environ/AZURE_KEY_SECRET_NAME
      api_base: https://x.openai.azure.com
      api_version: "2024-10-21"
"""


def test_same_input_same_bytes_from_any_directory(tmp_path, monkeypatch):
    src = ROOT / "examples" / "regate.yaml"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(src, tmp_path / "a" / "regate.yaml")
    monkeypatch.chdir(tmp_path / "a")
    assert main(["compile", "regate.yaml", "-o", "one.tar.gz"]) == 0
    assert main(["compile", "regate.yaml", "-o", "dir"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main(["compile", str(tmp_path / "a" / "regate.yaml"), "-o", "two.tar.gz"]) == 0
    assert main(["compile", "../a/regate.yaml", "-o", "dir"]) == 0
    assert (tmp_path / "a" / "one.tar.gz").read_bytes() == (tmp_path / "b" / "two.tar.gz").read_bytes()
    tree = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert tree(tmp_path / "a" / "dir") == tree(tmp_path / "b" / "dir")


def test_tarball_entries_are_normalised(tmp_path):
    files = compiler.bundle_files(compiler.load_config(ROOT / "examples" / "regate.yaml"))
    raw = compiler.bundle.tarball(files)
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert {m.name.lstrip("/") for m in members} == set(files)


def test_manifest(tmp_path):
    src = ROOT / "examples" / "regate.yaml"
    files = compiler.bundle_files(compiler.load_config(src))
    manifest = json.loads(files[".manifest"])
    content = {k: v for k, v in files.items() if k != ".manifest"}
    assert manifest == {
        "revision": content_revision(content),
        "roots": ["regate"],
        "rego_version": 1,
        "metadata": {
            "regate_version": compiler.bundle.__version__,
            "config_file": "regate.yaml",
            "config_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        },
    }


def test_revision_follows_policy_content(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("general_settings:\n  enable_jwt_auth: true\n")
    b = tmp_path / "b.yaml"
    b.write_text("general_settings:\n  enable_jwt_auth: true\n  litellm_jwtauth:\n    admin_jwt_scope: other\n")
    rev = lambda p: json.loads(compiler.bundle_files(compiler.load_config(p))[".manifest"])["revision"]
    assert rev(a) != rev(b)
    assert rev(a) == rev(a)


def test_no_secret_in_any_bundle_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(SECRET_CONFIG)
    assert main(["compile", "c.yaml", "-o", "b.tar.gz"]) == 0
    assert main(["compile", "c.yaml", "-o", "b"]) == 0
    blobs = [gzip.decompress((tmp_path / "b.tar.gz").read_bytes())]
    blobs += [p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()]
    for blob in blobs:
        assert b"SECRET" not in blob
        assert b"llm.internal" not in blob


def test_compile_replaces_an_earlier_bundle_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("general_settings:\n  enable_jwt_auth: true\n")
    assert main(["compile", "c.yaml", "-o", "b"]) == 0
    (tmp_path / "b" / "regate" / "stale.rego").write_text("package stale\n")
    assert main(["compile", "c.yaml", "-o", "b"]) == 0
    assert not (tmp_path / "b" / "regate" / "stale.rego").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c.yaml"]
