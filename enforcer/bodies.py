"""Reading a request's JSON body within the configured size limit."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from regate.common.errors import BadRequestError


def json_body():
    """The parsed JSON body, or None when it is not JSON; 413 when it is over the limit, 400 when
    it nests deeper than the JSON parser recurses.

    Werkzeug cuts a chunked body (no Content-Length) off at the limit instead of refusing
    it, so one that reached the limit was too large rather than malformed.
    """
    req = request._get_current_object()  # once: every access through the proxy looks it up again
    try:
        body = req.get_json(silent=True)
    except RecursionError:  # not a ValueError, so `silent` lets it through
        raise BadRequestError("the request body nests JSON too deeply", code="json_too_deep") from None
    if req.content_length is None and getattr(req.stream, "is_exhausted", False):
        raise RequestEntityTooLarge()
    return body
