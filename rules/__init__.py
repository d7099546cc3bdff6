"""Admin-managed sync rules: not built yet (issue 5).

Until rules exist, routing is the foundation's default: an event without
`targets` goes to every enabled connection except its source, and the event
records `routing: default`. See docs/architecture.md.
"""
