"""Restreams of a live: their records (`store`), their owner (`service.Restreams`, which
the restreams' runtime reads and is told by), and the handlers (`views`)."""
