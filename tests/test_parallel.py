import concurrent.futures
import threading
import time

import pytest

from tf_pacseg import parallel


def _slow_square(x):
    # Later items finish first: the order must come from the map, not the pool.
    time.sleep(0.01 * (5 - x % 5))
    return x * x


@pytest.mark.parametrize("workers", [None, 4])
def test_ordered_map_keeps_the_input_order(workers):
    if workers is None:
        results = list(parallel.ordered_map(_slow_square, range(12)))
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as executor:
            results = list(parallel.ordered_map(_slow_square, range(12), executor, window=3))
    assert results == [x * x for x in range(12)]


def test_ordered_map_raises_at_the_failing_item_and_bounds_work_in_flight():
    started = []
    lock = threading.Lock()

    def check(x):
        with lock:
            started.append(x)
        if x == 2:
            raise ValueError("item 2")
        return x

    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        results = parallel.ordered_map(check, range(100), executor, window=4)
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(ValueError, match="item 2"):
            next(results)
    # Item 2 failed while at most `window` items were submitted ahead of the consumer.
    assert max(started) < 2 + 4
