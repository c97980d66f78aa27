"""Settings shared by the property-based tests: bounded examples for CI, no example database on disk."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def bounded(default_examples: int) -> settings:
    """`default_examples` per test (REGATE_PROPERTY_EXAMPLES raises it for a longer local run)."""
    return settings(max_examples=int(os.environ.get("REGATE_PROPERTY_EXAMPLES", default_examples)), deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
