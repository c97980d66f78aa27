"""regate: LiteLLM-style JWT access control, compiled to OPA and enforced in front of LLM traffic.

Packages, ground floor first; each imports only packages listed before it:

- `regate.common` (folder `common/`): errors, version, env references, money, the OPA binary;
- `regate.compiler` (`compiler/`): config YAML → validated model → Rego bundle;
- `regate.enforcer` (`enforcer/`): the Flask enforcer and its store;
- `regate.devtools` (`devtools/`): the dev identity provider, the model stub, the demo;
- `regate.cli` (here): the `regate` command.

`schemas/`, `templates/` and `examples/` ship as data beside the packages (`regate/schemas`, ...).
"""

from regate.common.version import __version__

__all__ = ["__version__"]
