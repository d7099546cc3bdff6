"""Ingest: the write path of an event (services, routing, conflicts, outbox, reads). See docs/architecture.md."""
