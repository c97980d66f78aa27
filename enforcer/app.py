"""The Flask app factory."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException

from regate.common.errors import RegateError

from . import gate, health, management, proxy
from .components import Components
from .responses import error_response, from_error
from .settings import Settings


def create_app(settings: Settings, *, start: bool = True) -> Flask:
    """Build the enforcer. With `start`, migrate the store and start the background workers."""
    app = Flask("regate")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    components = Components(settings)
    components.init_app(app)
    gate.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(proxy.bp)
    app.register_blueprint(management.bp)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        # 404/405/413 from routing and body limits, in the OpenAI shape like every other error.
        return error_response(e.code or 500, e.description or e.name, f"http_{e.code}")

    @app.errorhandler(RegateError)
    def regate_error(e: RegateError):
        return from_error(e)

    if start:
        components.start()
    return app


def configure_logging(level: str = "INFO") -> None:
    """One line per record on stdout; access lines are JSON already."""
    logging.basicConfig(level=level, format="%(message)s" if level == "INFO" else "%(levelname)s %(name)s %(message)s")
