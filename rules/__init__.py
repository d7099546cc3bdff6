"""Admin-managed sync rules: which events sync where, with which fields (docs/rules.md)."""
