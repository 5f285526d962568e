"""Retries back off with full jitter: workers that failed together do not retry together."""

import random

from workers.tasks import BACKOFF_CAP_S, backoff


def test_backoff_is_uniform_up_to_the_capped_exponential():
    rng = random.Random(0)
    for retries in range(10):
        ceiling = min(BACKOFF_CAP_S, 2.0 * 2**retries)
        delays = [backoff(retries, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling  # spread, not fixed
