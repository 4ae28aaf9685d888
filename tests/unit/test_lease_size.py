"""How many jobs a worker leases next: grow while full batches are quick, shrink when slow;
and the overhead per job it reports for the scaling policy."""

import pytest

from worker.runner import BATCH_SECONDS, next_lease_size, smoothed_overhead

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


@pytest.mark.parametrize(
    "previous,idle,jobs,expected",
    [
        (None, 0.064, 64, 0.001),  # the first full batch: 64 ms between batches, 64 jobs
        (None, -0.01, 8, 0.0),  # the next batch was ready before this one finished
        (0.001, 0.0, 64, 0.0008),  # smoothed: one batch moves it a fifth of the way
        (0.001, 0.64, 64, 0.0028),
    ],
)
def test_smoothed_overhead(previous, idle, jobs, expected):
    assert smoothed_overhead(previous, idle, jobs) == pytest.approx(expected)
