import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from recordsync.heap import heap_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recordsync.settings")
application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018 - the URL conf and the views it imports, loaded now and frozen with the rest
heap_freeze()
