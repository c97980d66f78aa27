"""Readers for the deployment files: the Dockerfile, .dockerignore, compose.yaml, deploy/.env.example
and the Kubernetes manifests, each parsed the way its tool reads it (as far as the tests need)."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
OPA_CONFIG = DEPLOY / "opa" / "config.yaml"
K8S_DIR = DEPLOY / "k8s"
EXAMPLE_CONFIG = ROOT / "examples" / "regate.yaml"


# -- Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the (continuation-joined) line


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined; comment lines (also inside continuations) dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


def exec_form(args: str) -> list[str]:
    """An exec-form (JSON array) argument list; shell form fails: it would not pass signals on."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage, base_env: dict[str, str]) -> dict[str, str]:
    """The stage's environment: ENV instructions applied over `base_env`, with $VAR / ${VAR} expanded."""
    env = dict(base_env)
    for inst in stage.all("ENV"):
        for word in shlex.split(inst.args):
            name, sep, value = word.partition("=")
            assert sep, f"use ENV NAME=value: {inst.args}"
            env[name] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)
    return env


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """(options, exec-form command) of the stage's HEALTHCHECK."""
    words = stage.last("HEALTHCHECK").args
    options: dict[str, str] = {}
    while words.startswith("--"):
        option, _, words = words.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        words = words.strip()
    kind, _, command = words.partition(" ")
    assert kind.upper() == "CMD", f"HEALTHCHECK must use CMD: {words}"
    return options, exec_form(command.strip())


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None


def copies(stage: Stage) -> list[Copy]:
    result = []
    for inst in stage.all("COPY"):
        words = shlex.split(inst.args)
        flags = {w[2:].partition("=")[0]: w.partition("=")[2] for w in words if w.startswith("--")}
        paths = [w for w in words if not w.startswith("--")]
        result.append(Copy(sources=paths[:-1], dest=paths[-1], from_stage=flags.get("from")))
    return result


# -- .dockerignore -------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax: `*` and `?` stay inside one path segment, `**` spans segments."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """Which paths of the repository `docker build .` sends: a path (or any parent directory of it)
    matching a pattern is excluded, a later `!pattern` match includes it again; the last match wins."""

    def __init__(self, path: Path = DOCKERIGNORE):
        self.rules: list[tuple[bool, re.Pattern, str]] = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
            self.rules.append((include, _pattern_regex(pattern), pattern))

    def included(self, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = True
        for include, regex, _ in self.rules:
            if any(regex.match(p) for p in prefixes):
                result = include
        return result

    def _may_include_below(self, rel_dir: str) -> bool:
        # An excluded directory can hold re-included paths only if some `!pattern` reaches into it.
        for include, _, pattern in self.rules:
            literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
            if include and (literal.startswith(rel_dir + "/") or literal == rel_dir or rel_dir.startswith(literal)):
                return True
        return False

    def context_files(self, root: Path = ROOT) -> list[str]:
        """Every file of the build context, as paths relative to `root`."""
        files: list[str] = []

        def walk(directory: Path, rel: str) -> None:
            for entry in sorted(directory.iterdir()):
                child = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir() and not entry.is_symlink():
                    if self.included(child) or self._may_include_below(child):
                        walk(entry, child)
                elif self.included(child):
                    files.append(child)

        walk(root, "")
        return files


# -- compose ---------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def replace(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        present = name in env
        value_set = present and env[name] != ""
        if op in (":?", "?") and not (value_set if op == ":?" else present):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-":
            return env[name] if value_set else arg
        if op == "-":
            return env[name] if present else arg
        return env.get(name, "")

    return _INTERPOLATION.sub(replace, value)


def compose_variables(text: str) -> dict[str, str | None]:
    """Every variable the compose file interpolates -> its operator (None for plain ${VAR})."""
    return {m.group("name"): m.group("op") for m in _INTERPOLATION.finditer(text) if m.group("name")}


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        env[name.strip()] = value.strip()
    return env


# -- Kubernetes ------------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml"))


def k8s_objects() -> list[dict]:
    objects = []
    for path in k8s_files():
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def k8s_object(kind: str, name: str) -> dict:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_containers(deployment: dict) -> dict[str, dict]:
    """Every container of a Deployment's pod (sidecars declared as init containers included), by name."""
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def flag_value(args: list[str], flag: str) -> str:
    """The value of `--flag=value` or `--flag value` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return args[i + 1]
    raise AssertionError(f"{flag} not in {args}")


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with the value of `flag` (either spelling) replaced; the flag must be present."""
    out, found, skip = [], False, False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith(flag + "="):
            out.append(f"{flag}={value}")
            found = True
        elif arg == flag:
            out += [flag, value]
            found, skip = True, True
        else:
            out.append(arg)
    assert found, f"{flag} not in {args}"
    return out


def config_env_references(path: Path = EXAMPLE_CONFIG) -> set[str]:
    """Names of every `os.environ/NAME` value in a LiteLLM config."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, dict):
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)
        elif isinstance(node, str) and node.startswith("os.environ/"):
            names.add(node[len("os.environ/"):])

    visit(yaml.safe_load(path.read_text()))
    return names
