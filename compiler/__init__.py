"""regate's compiler: LiteLLM config YAML → validated model → Rego/data/tests → OPA bundle.

Stages, one module each: loader (YAML with positions) → validate (JSON Schema)
→ semantics (model + cross-field checks) → render (templates) → bundle (write).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from regate.common.errors import ConfigError

from . import bundle, custom_policies, loader, render, semantics, signing, validate
from .model import Config


def load_config(path: str | os.PathLike) -> Config:
    """Load and check a config file; raise ConfigError carrying every problem found."""
    loaded = loader.load_file(path)
    problems = validate.validate(loaded)
    if problems:
        raise ConfigError(problems)
    config, diagnostics = semantics.interpret(loaded)
    if config is None:
        raise ConfigError([d for d in diagnostics if d.severity == "error"])
    return custom_policies.load(config)


def bundle_files(config: Config, *, signing_key: str | os.PathLike | None = None,
                 signing_alg: str | None = None, key_id: str | None = None) -> dict[str, bytes]:
    """Every file of the bundle for `config`: .manifest included, .signatures.json with a signing key."""
    name = PurePosixPath(config.source_file).name
    rendered = render.render(config)
    custom_policies.check(config, rendered)
    files = bundle.with_manifest(rendered, config_sha256=config.source_sha256, config_name=name)
    if signing_key is not None:
        files[signing.SIGNATURES_FILE] = signing.signatures(files, signing_key, algorithm=signing_alg, key_id=key_id)
    return files


def compile_file(path: str | os.PathLike, out: str | os.PathLike, **signing_options) -> Config:
    """`regate compile`: load, check, render (and sign) and write the bundle at `out`."""
    config = load_config(path)
    bundle.write(bundle_files(config, **signing_options), out)
    return config
