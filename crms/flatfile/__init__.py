"""One CSV or JSON Lines file per object in a folder (see connector.py)."""
