"""Shared test configuration.

Long soak/torture runs carry ``@pytest.mark.slow`` and run only with
``NORIKV_SLOW=1`` (CI runs a bounded quick mode of each). Hypothesis uses the
``ci`` profile by default (bounded examples, no deadline: this machine is
shared and slow); ``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SLOW = os.environ.get("NORIKV_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="long run: set NORIKV_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
