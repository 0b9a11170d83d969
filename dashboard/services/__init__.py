"""Domain logic.  Functions here take plain values, never request objects, and do not commit:
the caller (a view, a CLI command, the relay) commits once per use case."""
