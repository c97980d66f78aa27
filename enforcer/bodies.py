"""Reading a request's JSON body within the configured size limit."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def json_body():
    """The parsed JSON body, or None when it is not JSON; 413 when it is over the limit.

    Werkzeug cuts a chunked body (no Content-Length) off at the limit instead of refusing
    it, so one that reached the limit was too large rather than malformed.
    """
    body = request.get_json(silent=True)
    if request.content_length is None and getattr(request.stream, "is_exhausted", False):
        raise RequestEntityTooLarge()
    return body
