"""fusionbench.executors.pool_map: the one local process pool (results, errors, empty input)."""
import operator

import pytest

from fusionbench.executors import pool_map


def test_pool_map_returns_every_result_with_its_arguments():
    got = dict(pool_map(operator.pow, [(2, 3), (3, 2), (5, 1)], jobs=2))
    assert got == {(2, 3): 8, (3, 2): 9, (5, 1): 5}
    assert list(pool_map(operator.pow, [], jobs=2)) == []


def test_pool_map_raises_or_returns_a_task_error():
    with pytest.raises(ZeroDivisionError):
        list(pool_map(operator.truediv, [(1, 0)], jobs=1))
    got = dict(pool_map(operator.truediv, [(1, 0), (4, 2)], jobs=2, return_exceptions=True))
    assert isinstance(got[(1, 0)], ZeroDivisionError) and got[(4, 2)] == 2.0
    with pytest.raises(ValueError, match="jobs"):
        list(pool_map(operator.pow, [(1, 1)], jobs=0))

