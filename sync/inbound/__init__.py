"""Inbound: changes that come from the CRMs (polls, webhooks, backfill, reconcile). See docs/architecture.md."""
