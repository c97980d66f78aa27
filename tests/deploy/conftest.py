"""Fixtures for the deployment checks: the image reproduced outside Docker, and the real
components around it (OPA, PostgreSQL, the IdP and model stand-ins)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from regate import compiler
from tests.support.idp import IdentityProvider
from tests.support.mock_openai import MockOpenAI
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401 - fixtures

from . import files
from .image import ImageRoot, ImageSpec

UPSTREAM_KEY = "sk-deploy-upstream-key-0123456789"


@pytest.fixture(scope="session")
def image_spec() -> ImageSpec:
    return ImageSpec.load()


@pytest.fixture(scope="module")
def image(image_spec) -> ImageRoot:
    # Not under pytest's tmp dir: that is root-only, and the image's user must enter this one.
    root = Path(tempfile.mkdtemp(prefix="regate-image-"))
    try:
        yield ImageRoot(root, image_spec).build()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def example_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy-bundle") / "bundle.tar.gz"
    return compiler.bundle.write(compiler.bundle_files(compiler.load_config(files.EXAMPLE_CONFIG)), out)


@pytest.fixture(scope="module")
def idp():
    with IdentityProvider(audience="regate-deploy") as provider:
        yield provider


@pytest.fixture(scope="module")
def upstream():
    with MockOpenAI(api_key=UPSTREAM_KEY) as mock:
        yield mock
