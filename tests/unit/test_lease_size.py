"""How many jobs a worker leases next: grow while full batches are quick, shrink when slow."""

import pytest

from worker.runner import BATCH_SECONDS, next_lease_size

FAST, OK, SLOW = BATCH_SECONDS / 10, BATCH_SECONDS * 2, BATCH_SECONDS * 5


@pytest.mark.parametrize(
    "size,leased,seconds,smallest,largest,expected",
    [
        (8, 8, FAST, 8, 64, 16),  # a full, quick batch: lease twice as many
        (32, 32, FAST, 8, 64, 64),
        (64, 64, FAST, 8, 64, 64),  # never above the largest
        (40, 40, FAST, 8, 50, 50),
        (8, 3, FAST, 8, 64, 8),  # the queue ran short: growing would not help
        (16, 16, OK, 8, 64, 16),  # in the band: keep
        (64, 64, SLOW, 8, 64, 32),  # slow batches: halve
        (8, 8, SLOW, 8, 64, 8),  # never below the smallest
        (1, 1, FAST, 1, 1, 1),  # --max-jobs 1 stays 1
    ],
)
def test_next_lease_size(size, leased, seconds, smallest, largest, expected):
    assert next_lease_size(size, leased, seconds, smallest, largest) == expected
