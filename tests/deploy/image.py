"""The enforcer image's filesystem and commands, reproduced outside Docker (no engine here).

`ImageRoot` lays out, under a temp dir, what the Dockerfile's final stage holds:
- the files its `COPY` instructions take from the build context, with .dockerignore applied
  (so a file the context leaves out is missing here too);
- /opt/venv (the virtualenv the build stages make): a fresh venv holding exactly what the deps
  stage installs - the requirements its own command extracts from pyproject.toml and their
  dependencies, copied from the project's .venv, which must have them at the pinned versions -
  plus regate's wheel, built (offline) from the files the wheel stage copies from the build
  context and installed the way that stage installs it. No test tools, no editable install:
  regate's code can only come from the wheel;
- the directories the Dockerfile creates (data dir, /etc/regate) and, like a mount, the config.

Commands and environment of the image are run with image paths mapped into that root, as the
image's USER when the tests run as root (so only the data directory and /tmp are writable to
them, as with a read-only root filesystem), and with HOME as Docker sets it. Only what cannot
hold on a shared test machine is substituted: the listen address (a free loopback port instead
of 0.0.0.0:4000) and the OPA / database / upstream addresses.
"""

from __future__ import annotations

import importlib.metadata
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import files
from .processes import Process

# The PATH of the base image (python:*-slim), for `ENV PATH=/opt/venv/bin:$PATH`.
BASE_IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class ImageSpec:
    """What the Dockerfile declares for the final stage."""

    stages: list[files.Stage]
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck_options: dict[str, str]
    healthcheck: list[str]
    user: str
    workdir: str
    exposed: list[str]

    @classmethod
    def load(cls) -> "ImageSpec":
        stages = files.parse_dockerfile()
        final = stages[-1]
        options, check = files.healthcheck(final)
        return cls(
            stages=stages,
            env=files.env_of(final, BASE_IMAGE_ENV),
            entrypoint=files.exec_form(final.last("ENTRYPOINT").args),
            cmd=files.exec_form(final.last("CMD").args),
            healthcheck_options=options,
            healthcheck=check,
            user=final.last("USER").args,
            workdir=final.last("WORKDIR").args,
            exposed=[w for inst in final.all("EXPOSE") for w in inst.args.split()],
        )

    @property
    def final(self) -> files.Stage:
        return self.stages[-1]

    def stage(self, name: str) -> files.Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found


def _python_for(user: dict) -> str:
    """A Python 3.11 (the minor version .venv's wheels are built for) that `user` may execute.
    .venv's own base interpreter may live under a directory only root can enter."""
    candidates = [getattr(sys, "_base_executable", None), "/usr/bin/python3.11", shutil.which("python3.11")]
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            result = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                                    capture_output=True, text=True, timeout=30, **user)
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip() == "(3, 11)":
            return candidate
    raise AssertionError(f"no Python 3.11 runnable as the image's user among {candidates}")


def runtime_distributions(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions `pip install -r` of `requirements` would put into an empty venv:
    the transitive closure with extras and markers, each pinned version checked against .venv."""
    found: dict[str, importlib.metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    queue = [Requirement(r) for r in requirements]
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        try:
            dist = found.get(name) or importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{req.name} is not installed in .venv: run scripts/bootstrap") from None
        assert req.specifier.contains(dist.version, prereleases=True), \
            f".venv has {req.name} {dist.version}, the image would install {req}"
        found[name] = dist
        for extra in {"", *req.extras}:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for raw in dist.requires or []:
                dep = Requirement(raw)
                if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                    queue.append(dep)
    return list(found.values())


class ImageRoot:
    """`root` must be a fresh directory others may enter (not under pytest's root-only tmp dir)."""

    def __init__(self, root: Path, spec: ImageSpec):
        self.root = root
        self.spec = spec
        self.mapped: list[str] = []  # image paths that exist under root
        uid, _, gid = spec.user.partition(":")
        # As root, run as the image's USER; otherwise we are already an unprivileged user.
        self.user: dict = dict(user=int(uid), group=int(gid or uid), extra_groups=[]) if os.geteuid() == 0 else {}
        self.owner = (int(uid), int(gid or uid)) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        homes = re.findall(r"--home-dir[ =](\S+)", " ".join(i.args for i in spec.final.all("RUN")))
        self.home = homes[0] if homes else "/"

    def build(self) -> "ImageRoot":
        ignore = files.DockerIgnore()
        context = set(ignore.context_files())
        for copy in files.copies(self.spec.final):
            if copy.from_stage is not None:
                assert copy.dest == "/opt/venv", f"unexpected COPY --from: {copy}"
                self._make_venv(self.root / "opt/venv", _python_for(self.user))
                self._install_wheel(self.root / "opt/venv", self.spec.stage(copy.from_stage), context)
                self.mapped.append("/opt/venv")
                continue
            self._copy(context, copy, self.root)
            self._map(copy.dest)
        for directory in ("/etc/regate", self.spec.env["REGATE_DATA_DIR"]):
            (self.root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self.mapped.append(directory)
        # As in the image: everything root-owned and world-readable (whatever our umask is) ...
        for path in [self.root, *self.root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        # ... but `install -d -o regate -g regate -m 0700 /var/lib/regate`: the one directory the user owns.
        data_dir = self.path(self.spec.env["REGATE_DATA_DIR"])
        os.chown(data_dir, *self.owner)
        data_dir.chmod(0o700)
        return self

    @staticmethod
    def _copy(context: set[str], copy: files.Copy, root: Path) -> None:
        """`COPY src... dest` from the build context into `root`, as Docker copies: a directory's
        contents go into dest; a file goes to dest, or into it when dest ends in "/"."""
        into = copy.dest.endswith("/") or len(copy.sources) > 1
        dest = root / copy.dest.strip("/")
        for source in copy.sources:
            source = source.rstrip("/")
            wanted = [f for f in context if f == source or f.startswith(source + "/")]
            assert wanted, f"COPY {source}: not in the build context (.dockerignore?)"
            for rel in wanted:
                if rel != source:
                    target = dest / rel[len(source) + 1:]
                else:
                    target = dest / posixpath.basename(rel) if into else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(files.ROOT / rel, target)

    def _map(self, dest: str) -> None:
        top = "/" + dest.strip("/").split("/")[0]
        if top not in self.mapped:
            self.mapped.append(top)

    def _install_wheel(self, venv: Path, stage: files.Stage, context: set[str]) -> None:
        """What the wheel stage does: build regate's wheel from the files it copies, install it into the venv."""
        runs = " ".join(i.args for i in stage.all("RUN"))
        assert "pip wheel --no-deps" in runs and "pip install --no-deps --no-index" in runs, runs
        work = Path(tempfile.mkdtemp(prefix="regate-wheel-"))
        try:
            for copy in files.copies(stage):
                self._copy(context, copy, work)
            (src,) = {c.dest.strip("/") for c in files.copies(stage) if "pyproject.toml" in c.sources}
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
            subprocess.run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"),
                                  str(work / src)], check=True)
            (wheel,) = (work / "dist").glob("regate-*.whl")
            subprocess.run(pip + ["--python", str(venv / "bin/python"), "install", "-q", "--no-deps", "--no-index",
                                  "--no-compile", str(wheel)], check=True)
        finally:
            shutil.rmtree(work)

    def _make_venv(self, target: Path, python: str) -> None:
        subprocess.run([python, "-m", "venv", "--without-pip", str(target)], check=True)
        site = Path(subprocess.run([str(target / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        # Copied, not linked: the image's user may not be allowed into the checkout's .venv
        # (a clone under a root-only directory such as mktemp's).
        for dist in runtime_distributions(self.requirements()):
            for top in sorted({f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}):
                source, copy = Path(dist.locate_file(top)), site / top
                if copy.exists() or not source.exists():
                    continue
                if source.is_dir():
                    shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, copy)

    def requirements(self) -> list[str]:
        """What the deps stage installs: its own extraction command run on pyproject.toml."""
        deps = self.spec.stages[0]
        (copy,) = [c for c in files.copies(deps) if c.sources == ["pyproject.toml"]]
        run = " ".join(i.args for i in deps.all("RUN"))
        match = re.search(r'python -c "([^"]+)" > (\S+)', run)
        assert match, "the deps stage writes its requirements with python -c"
        code, out = match.groups()
        assert f"-r {out}" in run, "the deps stage installs the requirements it extracted"
        build = Path(tempfile.mkdtemp(prefix="regate-build-"))
        try:
            shutil.copy2(files.ROOT / "pyproject.toml", build / "pyproject.toml")
            code = code.replace(posixpath.dirname(copy.dest), str(build))
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        finally:
            shutil.rmtree(build)
        return [line for line in result.stdout.splitlines() if line.strip()]

    def mount(self, host_file: Path, image_path: str) -> None:
        """Like a read-only bind mount: the host file appears at `image_path`."""
        target = self.root / image_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_file, target)

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def translate(self, value: str) -> str:
        """Image paths (as whole words or PATH-list entries) mapped into the root."""
        parts = value.split(":")
        out = []
        for part in parts:
            for prefix in self.mapped:
                if part == prefix or part.startswith(prefix + "/"):
                    part = str(self.root) + part
                    break
            out.append(part)
        return ":".join(out)

    def environ(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The container's environment: the image's ENV (paths mapped), the host's PATH after the
        image's own entries, then `overrides` (what compose / Kubernetes would set)."""
        env = {"HOME": self.home}  # Docker sets HOME from the USER's passwd entry
        env.update({k: self.translate(v) for k, v in self.spec.env.items()})
        image_path = [p for p in env["PATH"].split(":") if p.startswith(str(self.root))]
        env["PATH"] = ":".join(image_path + [os.environ.get("PATH", "")])
        env.update(overrides or {})
        return env

    def argv(self, args: list[str]) -> list[str]:
        return [self.translate(a) for a in args]

    def run(self, args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command of the image (e.g. the HEALTHCHECK) to completion, as the image's user."""
        return subprocess.run(self.argv(args), env=env, cwd=self.path(self.spec.workdir), **self.user, **kwargs)

    def start(self, args: list[str], env: dict[str, str]) -> Process:
        """Start a long-running command of the image (ENTRYPOINT + CMD), as the image's user."""
        return Process(self.argv(args), env=env, cwd=self.path(self.spec.workdir), **self.user)
