"""`ordered_map`: a map computed ahead by an executor, in order, with bounded memory."""

import collections
import itertools

# Items in flight: keeps every worker busy and memory flat when the work
# outpaces its consumer.
_WINDOW = 256


def ordered_map(function, items, executor=None, window=_WINDOW):
    """`map(function, items)` computed ahead by `executor`, in order, with bounded memory.

    Args:
        function: callable of one item (picklable for a process pool).
        items: iterable.
        executor: a `concurrent.futures.Executor`, or `None` to map in this
            thread. Defaults to `None`.
        window: int. Items in flight at most. Defaults to 256.

    Yields:
        `function(item)` for each item, in order. An exception raised by
        `function` is raised here, at its item.

    Example:

    ```python
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        sizes = list(ordered_map(os.path.getsize, paths, executor))
    ```
    """
    if executor is None:
        yield from map(function, items)
        return
    items = iter(items)
    pending = collections.deque(
        executor.submit(function, item) for item in itertools.islice(items, window)
    )
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(executor.submit(function, item) for item in itertools.islice(items, 1))
            yield result
    finally:
        for future in pending:
            future.cancel()
