"""API: the /v1 viewsets, their serializers and auth, and the dashboard. See docs/architecture.md."""
