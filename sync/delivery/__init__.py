"""Delivery: sending jobs to their targets (dispatch, engine, throttle, breaker, holds, retry).

See docs/architecture.md."""
