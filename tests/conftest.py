"""Shared test settings.

Tests run under pytest-xdist, one worker per core: torch gets one thread per worker so the
workers do not oversubscribe the cores (and results do not depend on how torch splits
its float sums). Shared models live in ``tests/bnn_cases.py``, stream-test helpers in
``tests/stream_helpers.py``; tests import them as ``tests.<module>``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
