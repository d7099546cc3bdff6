"""What the mock CRMs' OAuth consent pages share: the page, the redirect back, and codes bound to what they
were issued for (client, redirect URI, PKCE challenge), since a MockToken row holds only the code itself."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import escape


def page(request: HttpRequest, *, title: str, lines: list[str], allow: str, deny: str) -> HttpResponse:
    """The consent form: the query it was opened with, posted back with the button clicked as `decision`
    (ids `allow` and `deny`, which the browser tests click)."""
    fields = [(k, v) for k, v in request.GET.items() if k != "decision"]
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields)
    scopes = "".join(f"<li>{escape(s)}</li>" for s in request.GET.get("scope", "").split() if s)
    text = "".join(f"<p>{line}</p>" for line in lines)  # the caller's own lines: escape what comes from a request
    return HttpResponse(
        f"""<!doctype html><html><head><title>{escape(title)}</title></head><body>
<h1>{escape(title)}</h1>{text}<ul>{scopes}</ul>
<form method="post">{hidden}
<button type="submit" name="decision" value="allow" id="allow">{escape(allow)}</button>
<button type="submit" name="decision" value="deny" id="deny">{escape(deny)}</button></form></body></html>"""
    )


def redirect(uri: str, extra: dict[str, str | None]) -> HttpResponseRedirect:
    """Back to the app's redirect URI, its own query kept, with ours added."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in extra.items() if v is not None]
    return HttpResponseRedirect(urlunsplit(parts._replace(query=urlencode(query))))


def binding(*parts: str) -> str:
    """A code's suffix: what it was issued for, so that spending it elsewhere fails."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def s256(verifier: str) -> str:
    """PKCE's S256 challenge of a verifier (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
