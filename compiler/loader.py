"""Load a YAML config into plain Python values plus the line/column of every node.

PyYAML's composer gives us nodes with marks; we build the values ourselves so that
each one can be traced back to where it stands (for located errors and for the
comments in the generated Rego). Duplicate keys are errors, not silent overrides; a key
beside a `<<` merge key overrides the merged one, as in PyYAML.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path as FsPath

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from regate.common.errors import ConfigError

from .diagnostics import Diagnostic, Path

MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class LoadedConfig:
    """Parsed values and where each one stands. `keys` holds the positions of mapping keys."""

    file: str
    data: object
    sha256: str
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def position(self, path: Path, *, key: bool = False) -> Position:
        """Where `path` stands; falls back to the nearest ancestor that has a position."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.values:
                return self.values[path]
        return Position(1, 1)

    def diagnostic(self, path: Path, message: str, code: str, *, key: bool = False, severity: str = "error") -> Diagnostic:
        pos = self.position(path, key=key)
        return Diagnostic(pos.line, pos.col, message, code, self.file, path, severity)


def _pos(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.errors: list[Diagnostic] = []

    def error(self, node: Node, path: Path, message: str, code: str) -> None:
        pos = _pos(node)
        self.errors.append(Diagnostic(pos.line, pos.col, message, code, self.file, path))

    def build(self, node: Node, path: Path, depth: int = 0):
        self.values[path] = _pos(node)
        if depth > MAX_DEPTH:
            self.error(node, path, f"nesting deeper than {MAX_DEPTH} levels", "too-deep")
            return None
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys: merged pairs first, then the map's own
            pairs = node.value
            merged, explicit = pairs[:len(pairs) - own], pairs[len(pairs) - own:]
            # As PyYAML (and so LiteLLM) reads them: a map's own keys override merged ones, and
            # among merged maps the one named first wins (it comes last here). Only a key the map
            # itself repeats is a duplicate.
            chosen: dict[str, tuple[Node, Node]] = {}
            for key_node, value_node in merged:
                key = self.loader.construct_object(key_node, deep=True)
                if isinstance(key, str):
                    chosen[key] = (key_node, value_node)
            own_keys: set[str] = set()
            for key_node, value_node in explicit:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    self.error(key_node, path, f"mapping keys must be strings, got {key!r}", "non-string-key")
                    continue
                if key in own_keys:
                    self.error(key_node, path + (key,), f"duplicate key '{key}'", "duplicate-key")
                    continue
                own_keys.add(key)
                chosen[key] = (key_node, value_node)
            out: dict = {}
            for key, (key_node, value_node) in chosen.items():
                self.keys[path + (key,)] = _pos(key_node)
                out[key] = self.build(value_node, path + (key,), depth + 1)
            return out
        raise AssertionError(f"unexpected YAML node {node!r}")


def load_text(text: str, file: str) -> LoadedConfig:
    """Parse YAML text; raise ConfigError with located diagnostics on any problem."""
    sha256 = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses non-printable characters at once
    except yaml.reader.ReaderError as e:
        raise ConfigError([_reader_error(text, e, file)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Diagnostic(1, 1, "config is empty", "empty-config", file)])
        builder = _Builder(loader, file)
        data = builder.build(node, ())
    except yaml.reader.ReaderError as e:
        raise ConfigError([_reader_error(text, e, file)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = ": ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([Diagnostic(line, col, f"invalid YAML: {problem}", "yaml-syntax", file)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Diagnostic(1, 1, f"invalid YAML: {e}", "yaml-syntax", file)]) from None
    finally:
        loader.dispose()
    if builder.errors:
        raise ConfigError(sorted(builder.errors))
    return LoadedConfig(file, data, sha256, builder.values, builder.keys)


def _reader_error(text: str, error: yaml.reader.ReaderError, file: str) -> Diagnostic:
    """A character YAML does not allow (a control character, say), located by its index in `text`."""
    position = min(max(error.position, 0), len(text))
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    return Diagnostic(line, col, f"invalid YAML: character U+{error.character:04X} is not allowed", "yaml-syntax", file)


def load_file(path: str | FsPath) -> LoadedConfig:
    """Read and parse a config file; unreadable files become a located ConfigError."""
    path = FsPath(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([Diagnostic(1, 1, f"cannot read config: {e.strerror}", "unreadable", str(path))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError([Diagnostic(line, col, "config is not UTF-8", "not-utf8", str(path))]) from None
    return load_text(text, str(path))
