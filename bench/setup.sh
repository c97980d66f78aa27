#!/usr/bin/env bash
# Build/install the benchmark tools into .cache/ (ignored by git); nothing goes into .venv.
#   .cache/bench-bin/vegeta        constant-rate HTTP load generator (Go module proxy)
#   .cache/bench-bin/ssebench      our SSE stream holder (bench/ssebench, Go standard library only)
#   .cache/bench-venv-litellm/     LiteLLM's own proxy, for the side-by-side figures
#   .cache/bench-pylib/            pyinstrument, for bench/profile_request.py only
#   .cache/bench-bin/py-spy        sampling profiler of the gunicorn worker (PyPI wheel's binary)
#   .cache/bench-venv-debian-python/  with --debian-python: the enforcer's dependencies on Debian's
#                                  /usr/bin/python3.11 (an optimized build), for `overhead.py --enforcer-python`
# Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.cache/bench-bin"
mkdir -p "$BIN"

if [ ! -x "$BIN/vegeta" ]; then
  GOBIN="$BIN" go install github.com/tsenart/vegeta/v12@v12.13.0
fi
(cd bench && go build -o "$BIN/ssebench" ./ssebench)

if [ ! -x .cache/bench-venv-litellm/bin/litellm ]; then
  python3.11 -m venv .cache/bench-venv-litellm
  .cache/bench-venv-litellm/bin/pip install -q 'litellm[proxy]==1.80.0'
fi

if [ ! -d .cache/bench-pylib/pyinstrument ]; then
  .venv/bin/python -m pip install -q --target .cache/bench-pylib 'pyinstrument==5.*'
fi
if [ ! -x "$BIN/py-spy" ]; then
  tmp="$(mktemp -d)"
  .venv/bin/python -m pip install -q --target "$tmp" 'py-spy==0.4.3'
  cp "$tmp/bin/py-spy" "$BIN/py-spy"
  rm -rf "$tmp"
fi
if [ "${1:-}" = "--debian-python" ] && [ ! -x .cache/bench-venv-debian-python/bin/python ]; then
  /usr/bin/python3.11 -m venv .cache/bench-venv-debian-python
  # The runtime dependencies exactly as pyproject.toml pins them (the project itself runs from the source tree).
  .venv/bin/python - <<'PY' > .cache/bench-debian-requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
  # + packaging: gunicorn 27's gevent worker imports it but gunicorn declares it only in its
  # [gevent] extra, which pyproject.toml does not name (reported to the lead; .venv has it via pytest).
  .cache/bench-venv-debian-python/bin/pip install -q -r .cache/bench-debian-requirements.txt packaging
fi
echo "bench tools ready in .cache/"
