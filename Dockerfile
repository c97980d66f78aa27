# regate image: the enforcer (default command) and the bundle service (`bundle serve ...`).
#
#   docker build -t regate:local .
#   docker run --rm -p 4000:4000 -v "$PWD/examples/regate.yaml:/etc/regate/config.yaml:ro" \
#       -e REGATE_OPA_URL=http://opa:8181 -e JWT_PUBLIC_KEY_URL=... regate:local
#   docker run --rm -v ...:/etc/regate/config.yaml:ro regate:local bundle serve --config /etc/regate/config.yaml
#
# There is no OPA in this image: run it beside the enforcer (deploy/compose.yaml, deploy/k8s/).
# regate is installed from its wheel into /opt/venv, exactly as `pip install` installs it
# anywhere else; no source tree is on the import path.

# Pinned to an exact patch release; bump it (and ideally add @sha256:<digest>) deliberately.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- dependencies: a virtualenv built from pyproject.toml's pinned dependencies ---------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml /build/pyproject.toml
# Wheels only: every dependency ships manylinux wheels for amd64 and arm64, so no compiler is
# ever needed, and a dependency that would need one fails the build instead of pulling one in.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/build/pyproject.toml', 'rb'))['project']['dependencies']))" > /build/requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: --require-virtualenv -r /build/requirements.txt

# --- regate: its wheel, built from the sources and installed into that virtualenv -------------
FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY compiler /src/compiler
COPY enforcer /src/enforcer
COPY regate /src/regate
COPY devtools /src/devtools
COPY audit /src/audit
COPY schemas /src/schemas
COPY templates /src/templates
COPY examples /src/examples
RUN python -m pip wheel --no-deps --wheel-dir /dist /src \
 && /opt/venv/bin/pip install --no-deps --no-index --require-virtualenv /dist/regate-*.whl \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# No package installer at run time: the image runs what it was built with.
RUN python -m pip uninstall -y -q pip setuptools wheel \
 && groupadd --system --gid 10001 regate \
 && useradd --system --uid 10001 --gid regate --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin regate \
 && install -d -o root -g root -m 0755 /etc/regate \
 && install -d -o regate -g regate -m 0700 /var/lib/regate

# Root-owned and read-only for the service user.
COPY --from=wheel /opt/venv /opt/venv

# PYTHONSAFEPATH: never import from the working directory, only the virtualenv.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONSAFEPATH=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REGATE_DATA_DIR=/var/lib/regate \
    REGATE_OPA_URL=http://127.0.0.1:8181

WORKDIR /var/lib/regate
USER 10001:10001
EXPOSE 4000
# Liveness only (the process answers); readiness (OPA bundle, store, state) is /health/readiness.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health/liveliness', timeout=3)"]
# Exec form: the gunicorn master is PID 1 and gets SIGTERM directly (graceful stop, spend flushed).
ENTRYPOINT ["regate"]
CMD ["serve", "--config", "/etc/regate/config.yaml", "--host", "0.0.0.0", "--port", "4000"]
