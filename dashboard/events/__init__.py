"""Events: the per-silo outbox, the relay that delivers it, and the live stream."""
