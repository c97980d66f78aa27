"""Markdown and plain text of matrices and diffs, for people: a README, a terminal, a pull request.

A diff's markdown is meant to be posted as a pull-request comment: changes are grouped by
principal and before → after, paths that make up a whole route group are named by the
group, and the whole stays under GitHub's comment limit (the JSON has every change).
"""

from __future__ import annotations

from collections import defaultdict

from .columns import Column
from .diff import Change, Diff
from .matrix import Matrix

COMMENT_LIMIT = 60_000  # characters; GitHub refuses comments over 65,536
PATHS_SHOWN = 8


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def matrix_markdown(m: Matrix) -> str:
    head = ["principal", *(c.label for c in m.columns)]
    lines = [
        f"## Access matrix of `{m.source}`",
        "",
        "Decided by OPA on the compiled bundle; any method (routes carry none). `allow 8/30` means 8 of",
        "the column's 30 paths are allowed, with the first deny reasons of the others.",
        "",
        "| " + " | ".join(_escape(h) for h in head) + " |",
        "|" + " --- |" * len(head),
    ]
    for p in m.principals:
        lines.append("| " + " | ".join([_escape(p.label), *(_escape(m.cell(p, c).text()) for c in m.columns)]) + " |")
    groups = [c for c in m.columns if c.kind == "group"]
    if groups:
        lines += ["", "Route groups (LiteLLM 1.80.0's members): " + ", ".join(f"`{c.label}` {len(c.paths)} paths"
                                                                               for c in groups) + "."]
    return "\n".join(lines) + "\n"


def _grouped(changes: list[Change]) -> list[tuple[Change, list[str]]]:
    """Changes with the same principal and the same before → after, with their paths."""
    rows: dict[tuple, list[Change]] = defaultdict(list)
    for c in changes:
        rows[(c.principal.key, c.model, c.before, c.after)].append(c)
    ordered = sorted(rows.values(), key=lambda cs: (not cs[0].widens, not cs[0].narrows))
    return [(cs[0], [c.path for c in cs]) for cs in ordered]


def _name_paths(paths: list[str], columns: list[Column]) -> list[str]:
    """Paths, with every route group they wholly contain named once instead of its members, and
    the path asked below a `/prefix/*` named by the prefix."""
    left = list(paths)
    named = []
    for group in sorted((c for c in columns if c.kind == "group"), key=lambda g: -len(g.paths)):
        members = set(group.paths)
        if len(members) > 1 and members <= set(left):
            named.append(f"all of `{group.label}` ({len(members)} paths)")
            left = [p for p in left if p not in members]
    prefixes = {c.paths[0]: c.label for c in columns if c.kind == "prefix"}
    shown = [f"`{prefixes.get(p, p)}`" for p in left[:PATHS_SHOWN]]
    if len(left) > PATHS_SHOWN:
        shown.append(f"and {len(left) - PATHS_SHOWN} more")
    return named + shown


def _counts(d: Diff) -> str:
    widen = sum(c.widens for c in d.changes)
    narrow = sum(c.narrows for c in d.changes)
    other = len(d.changes) - widen - narrow
    parts = [f"{widen} widen access", f"{narrow} narrow it"] + ([f"{other} change only the reason"] if other else [])
    return f"{len(d.changes)} decisions change ({', '.join(parts)}) of {d.cells} compared"


def diff_markdown(d: Diff) -> str:
    title = f"### regate diff: `{d.old}` → `{d.new}`"
    if not d.changed:
        return f"{title}\n\nNo access changes: all {d.cells} decisions are the same.\n"
    lines = [title, "", f"**{_counts(d)}.**", "", "| principal | requests | before | after |", "| --- | --- | --- | --- |"]
    size = sum(len(line) + 1 for line in lines)
    rows = _grouped(d.changes)
    for i, (change, paths) in enumerate(rows):
        what = ", ".join(_name_paths(paths, d.columns))
        if change.model:
            what += f" (model `{change.model}`)"
        after = f"**{change.after.summary()}**" if change.widens else change.after.summary()
        line = f"| {_escape(change.principal.label)} | {_escape(what)} | {change.before.summary()} | {after} |"
        if size + len(line) + 100 > COMMENT_LIMIT:  # room left for the note below
            lines.append(f"\n{len(rows) - i} more rows left out to fit a comment: run `regate diff --format json`.")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def diff_text(d: Diff) -> str:
    if not d.changed:
        return f"no access changes between {d.old} and {d.new} ({d.cells} decisions compared)\n"
    width = max(len(c.principal.label) for c in d.changes)
    lines = [f"{_counts(d)}: {d.old} -> {d.new}"]
    for c in d.changes:
        model = f" model {c.model}" if c.model else ""
        lines.append(f"{c.principal.label:<{width}}  {c.path}{model}  {c.before.summary()} -> {c.after.summary()}")
    return "\n".join(lines) + "\n"
