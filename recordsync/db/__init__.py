"""Database backends of our own: Django's, with what the service needs changed (and said why)."""
