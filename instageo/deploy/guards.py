"""The map app's gates, before any route (ASGI middleware and uvicorn's protocol): which
hosts, methods, sizes and tokens get in. Refusals have the app's error shape (edge.error_body)."""

from __future__ import annotations

import os
from pathlib import Path

from instageo.deploy.edge import error_body

MAX_URL = 1024  # bytes of path and query; nothing this app serves needs more
MAX_BODY = 4096  # bytes of a job request (JSON: model, bbox, date)
BODY_ROUTES = ("/api/jobs",)  # the only paths that take a POST with a body
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class TokenGuard:
    """ASGI middleware: with a token, every request carries it (header ``Authorization:
    Bearer T``, the cookie the page got, or ``?token=T`` on the first visit), else 401."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        import hmac
        from http.cookies import SimpleCookie
        from urllib.parse import parse_qs

        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode(errors="replace").removeprefix("Bearer ")
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode(errors="replace"))
        from_cookie = cookie["instageo_token"].value if "instageo_token" in cookie else ""
        from_query = (parse_qs((scope.get("query_string") or b"").decode(errors="replace")).get("token") or [""])[0]
        if not any(hmac.compare_digest(candidate.encode(), self.token.encode())
                   for candidate in (given, from_cookie, from_query) if candidate):
            from starlette.responses import JSONResponse

            await JSONResponse(error_body("this server needs its token (open the URL it printed)", "token"),
                               status_code=401)(scope, receive, send)
            return
        if from_query:  # the first visit: the page's later requests (tiles too) carry the cookie
            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [
                        (b"set-cookie", f"instageo_token={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())]
                await send(message)
            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)


def guarded_protocol(head_seconds: float):
    """uvicorn's HTTP protocol with a deadline for each request head: a connection that has
    not sent a whole request line and headers ``head_seconds`` after it opened (or after its
    last answer) is closed. uvicorn has idle keep-alive timeouts but none for a slow head,
    so 300 connections sending a byte at a time stayed open."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Guarded(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            waiting_for = self.cycle  # a new request replaces the cycle
            self._head_timer = self.loop.call_later(
                head_seconds, lambda: self.cycle is waiting_for and self.transport.close())

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_timer.cancel()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return Guarded


class RequestLimits:
    """ASGI middleware, before any route: requests must name an allowed host (``hosts``;
    None: any), only bodiless GET/HEAD requests with a URL under MAX_URL bytes get in, POSTs
    of at most MAX_BODY bytes to the job route and bodiless POSTs to cancel a job. Refusals
    have the app's error shape."""

    def __init__(self, app, hosts: list[str] | None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal:
                from starlette.responses import JSONResponse

                await JSONResponse(error_body(refusal[1], refusal[2]), status_code=refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, str | None] | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host[:host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
        if self.hosts is not None and name not in self.hosts:
            return 400, f"host {name!r} is not served (a page from another site cannot read this run)", "host"
        length = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        posting = scope["method"] == "POST" and scope["path"] in BODY_ROUTES
        cancelling = scope["method"] == "POST" and scope["path"].startswith("/api/jobs/") \
            and scope["path"].endswith("/cancel")
        size = headers.get(b"content-length", b"0")
        if scope["method"] not in ("GET", "HEAD") and not (posting or cancelling):
            return 405, "only GET and HEAD here", None
        if posting and b"content-length" not in headers:
            return 411, "a job request needs a Content-Length", None
        if posting and (not size.isdigit() or int(size) > MAX_BODY):
            return 413, f"a job request is at most {MAX_BODY} bytes", None
        if not posting and (size.strip() not in (b"0", b"") or b"transfer-encoding" in headers):
            return 413, "this request carries no body", None
        if length > MAX_URL:
            return 414, f"URL longer than {MAX_URL} bytes", None
        return None


def serving_line(host: str, port: int, token: str | None) -> str:
    """The URL to open: 0.0.0.0 and :: are where the server listens, not addresses a browser opens."""
    everywhere = host in ("0.0.0.0", "::")
    url = f"http://{'127.0.0.1' if everywhere else host}:{port}/" + (f"?token={token}" if token else "")
    return url + (" (listening on all interfaces: from another machine, use this machine's address)"
                  if everywhere else "")


TOKEN_ENV = "INSTAGEO_TOKEN"


def serve_token(given: str | None, token_file: Path | None) -> tuple[str | None, str]:
    """The token and where it came from: --token or --token-file (not both), else $INSTAGEO_TOKEN."""
    from instageo.errors import InputError

    if given is not None and token_file is not None:
        raise InputError("--token and --token-file: give one")
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--token-file {token_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
                             ) from None
        return (lines[0].strip() if lines else ""), f"--token-file {token_file}"
    if given is not None:
        return given, "--token"
    from_env = os.environ.get(TOKEN_ENV)
    return (from_env or "").strip() or None, f"${TOKEN_ENV}"
