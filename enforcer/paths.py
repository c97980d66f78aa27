"""Request-path canonicalisation, before any decision (DESIGN.md §3.5).

The policy compares paths literally, so a path must have exactly one spelling:
`/v1/chat/completions/../../key/generate`, `//key/generate` or `/key%2Fgenerate`
must never be read as some other route by the proxy, the framework or the
upstream. Non-canonical paths are refused outright (400), not normalised.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from regate.common.errors import BadRequestError

# Encoded "/", "\", ".", "%" and control bytes: decoding them would change the path's shape.
_DANGEROUS_ESCAPE = re.compile(r"%(2f|5c|2e|25|[01][0-9a-f]|7f)", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[%\\?#\x00-\x1f\x7f]")
MAX_PATH_BYTES = 2048


class NonCanonicalPath(BadRequestError):
    """Raised when a request path has another spelling than its canonical one."""

    code = "path_not_canonical"


def canonical_path(raw_target: str) -> str:
    """The decoded path of a request target (path + optional query), or NonCanonicalPath."""
    raw_path = raw_target.split("?", 1)[0]
    if len(raw_path) > MAX_PATH_BYTES:
        raise NonCanonicalPath("request path is too long")
    if _DANGEROUS_ESCAPE.search(raw_path):
        raise NonCanonicalPath("request path contains an encoded '/', '\\', '.', '%' or control character")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise NonCanonicalPath("request path is not valid UTF-8") from None
    if (
        not path.startswith("/")
        or "//" in path
        or (path != "/" and path.endswith("/"))
        or any(segment in (".", "..") for segment in path.split("/"))
        or _FORBIDDEN.search(path)
    ):
        raise NonCanonicalPath("request path is not canonical (no '//', '.', '..', trailing '/' or escapes)")
    return path


def origin_form(target: str) -> str:
    """A request target without the scheme and host of its absolute form (http://host/path)."""
    if target.startswith(("http://", "https://")):
        return "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    return target


def request_target(environ: dict) -> str:
    """The request target exactly as the client sent it (before the server decoded it)."""
    for key in ("RAW_URI", "REQUEST_URI"):
        raw = environ.get(key)
        if raw:
            return origin_form(raw)
    # Fallback (e.g. Werkzeug's test client): rebuild from the decoded PATH_INFO, re-encoded
    # by the WSGI layer as latin-1 bytes.
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
    return path
