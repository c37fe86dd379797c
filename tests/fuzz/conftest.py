"""Fuzzing suite (issue 14): hostile or careless inputs must end in exit 0 or 2, never a traceback.

Profiles (``STURDYNET_FUZZ_PROFILE``): ``ci`` (default; fixed seed, few examples, about a
minute at one thread) and ``bench`` (many more examples, for bench/fuzz_long.sh).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, derandomize=True, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=10, **_COMMON)
settings.register_profile("bench", max_examples=300, **_COMMON)
settings.load_profile(os.environ.get("STURDYNET_FUZZ_PROFILE", "ci"))
