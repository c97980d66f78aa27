"""Property tests of enforcer.paths.canonical_path against a reference written here: random request
targets built from the characters that matter (slashes, dots, escapes, controls, non-ASCII) are
accepted exactly when the reference accepts them, as the same path, and an accepted path has one
spelling only: normalising it changes nothing.
"""

from __future__ import annotations

import posixpath
import re

from hypothesis import given
from hypothesis import strategies as st

from regate.enforcer.paths import MAX_PATH_BYTES, NonCanonicalPath, canonical_path
from tests.support.properties import bounded

PROPERTY = bounded(600)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def reference(target: str) -> str | None:
    """The canonical path of `target`, or None when it has another spelling than its canonical one."""
    raw = target.split("?", 1)[0]
    if len(raw) > MAX_PATH_BYTES:
        return None
    out = bytearray()
    at = 0
    for match in _ESCAPE.finditer(raw):
        byte = int(match.group(1), 16)
        if byte < 0x20 or byte == 0x7F or chr(byte) in "/\\.%":  # decoding would change the path's shape
            return None
        out += raw[at:match.start()].encode("utf-8") + bytes([byte])
        at = match.end()
    out += raw[at:].encode("utf-8")
    try:
        path = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    segments = path.split("/")
    if (segments[0] != "" or len(segments) < 2 or any(s in (".", "..") for s in segments)
            or ("" in segments[1:] and path != "/")):
        return None
    if any(c in "%\\?#" or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    return path


PIECES = st.sampled_from(["/", "/", "//", ".", "..", "/.", "/..", "%2f", "%2F", "%2e", "%2E", "%5c", "%25", "%00",
                          "%0a", "%7f", "%41", "%20", "%c3%a9", "%e2%82", "%ff", "%", "%4", "%zz", "?", "?x=/../",
                          "#", "\\", "\x00", "\t", " ", "\x7f", "é", "\u2215", "v1", "chat", "completions", "key",
                          "generate", "-", "_", "~", ";", ":", "@", "+"])
TARGETS = st.lists(PIECES | st.text(max_size=3), max_size=12).map("".join)
ROUTES = st.sampled_from(["/v1/chat/completions", "/key/generate", "/team/block", "/health/readiness", "/"])


@PROPERTY
@given(target=TARGETS | st.tuples(ROUTES, TARGETS).map("".join))
def test_canonical_path_accepts_exactly_what_the_reference_accepts(target):
    expected = reference(target)
    try:
        path = canonical_path(target)
    except NonCanonicalPath:
        path = None
    assert path == expected
    if path is not None:
        assert posixpath.normpath(path) == path or path == "/"
        assert canonical_path(path) == path  # canonical: decoding it again finds nothing to change
