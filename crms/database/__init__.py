"""A table per object in an external PostgreSQL or SQLite database (see connector.py)."""
