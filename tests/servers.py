"""Real servers on 127.0.0.1 for tests: a Range-honouring file server, a STAC API
(stac-fastapi-pgstac over PostgreSQL/PostGIS) and a fault-injecting proxy. Each one a test
starts, it stops.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """A ThreadingHTTPServer on a free loopback port, run in a thread."""

    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class _RangeHandler(BaseHTTPRequestHandler):
    """Files under ``server.root`` with Range support; /__stats__ and /__reset__ count bytes."""

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        server = self.server
        if self.path.startswith("/__faults__"):  # /__faults__?/some/path=404,truncate,...
            query = urllib.parse.unquote(self.path.partition("?")[2])
            target, _, actions = query.partition("=")
            data = json.dumps({"faults": server.faults, "hits": server.fault_hits}).encode()
            if target:
                server.faults[target] = [a for a in actions.split(",") if a]
            else:  # clear the faults and the requests they hit
                server.faults, server.fault_hits = {}, []
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path.startswith(("/__stats__", "/__reset__")):
            if self.path.startswith("/__reset__"):  # /__reset__?latency=SECONDS
                server.bytes_sent = server.requests = server.most_in_flight = 0
                server.latency = float(self.path.partition("latency=")[2] or server.latency)
            data = json.dumps({"bytes_sent": server.bytes_sent, "requests": server.requests,
                               "most_in_flight": server.most_in_flight}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            self._answer(server, body)
        finally:
            with server.lock:
                server.in_flight -= 1

    def _answer(self, server, body: bool):
        time.sleep(server.latency)  # a remote store's time to first byte
        queued = server.faults.get(self.path.split("?")[0])
        fault = queued[0] if queued else None
        if body and queued and len(queued) > 1:  # GETs take the actions in turn; the last one stays
            queued.pop(0)
        if fault == "404":
            server.fault_hits.append(f"404 {self.path}")
            self.send_error(404)
            return
        path = (server.root / self.path.split("?")[0].lstrip("/")).resolve()
        if server.root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].split(",")[0].partition("-")
            start = int(first) if first else max(size - int(last), 0)
            end = min(int(last), size - 1) if first and last else size - 1
            status = 206
        if start > end:
            self.send_error(416)
            return
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read(end - start + 1)
            if fault == "truncate":  # half the promised bytes, then the connection drops
                server.fault_hits.append(f"truncate {self.path} {header}")
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)
            server.bytes_sent += len(data)
            server.requests += 1


def _serve_files(root: str, port: int, latency: float = 0.0) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _RangeHandler)
    httpd.root, httpd.bytes_sent, httpd.requests = Path(root).resolve(), 0, 0
    httpd.latency = latency
    httpd.lock, httpd.in_flight, httpd.most_in_flight = threading.Lock(), 0, 0  # requests answered at once
    httpd.faults, httpd.fault_hits = {}, []  # URL path -> actions ('404', 'truncate', 'ok')
    httpd.serve_forever()


class RangeFileServer:
    """Serves a folder over HTTP with Range support, counting the bytes it sends.

    It runs in its own process: GDAL calls that hold the GIL would otherwise stall a server
    thread in the same process, and the reader with it.
    """

    def __init__(self, root: Path, latency: float = 0.0):
        self.root = Path(root).resolve()
        self.latency = latency  # seconds added before each answer (simulated network)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = None

    def __enter__(self):
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r}); " \
               f"from tests.servers import _serve_files; _serve_files({str(self.root)!r}, {self.port}, {self.latency})"
        self._process = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the file server did not start")
                time.sleep(0.05)

    def __exit__(self, *exc):
        self._process.terminate()
        self._process.wait(10)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/__stats__", timeout=5) as answer:
            return json.loads(answer.read())

    def fault(self, path: str | None = None, *actions: str) -> dict:
        """Answer the next requests for the URL ``path`` with ``actions`` in turn: '404', or
        'truncate' (half the body, then the connection closes), or 'ok'; the last action
        stays for every later request. No path: clear every fault and its hits. Returns the
        faults and the requests they hit, as they were before this call."""
        query = "" if path is None else f"{path}={','.join(actions)}"
        url = self.url + "/__faults__?" + urllib.parse.quote(query, safe="/=,")
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())

    def reset(self, latency: float | None = None) -> None:
        """Zero the counters; optionally set the latency added to each answer."""
        query = "" if latency is None else f"?latency={latency}"
        urllib.request.urlopen(self.url + "/__reset__" + query, timeout=5).read()


class FaultProxy(_Server):
    """Forwards to ``upstream``; ``faults`` is a list of actions for the next requests:
    an int status to answer instead (e.g. 503), a (status, headers) pair (e.g.
    ``(429, {"Retry-After": "1"})``), 'slow' (sleep 2 s first), 'hang' (no answer for
    ``hang_seconds``, then close), 'drop' (close the connection with no answer), 'truncate'
    (forward, then send half the body and close), None (forward). Requests beyond the list
    are forwarded untouched. With ``only`` set, only requests whose path or body contain it
    take faults (e.g. "token": the pages after the first). With ``page_limit`` set, search
    requests ask the upstream for pages of that many items (so small catalogues page)."""

    def __init__(self, upstream: str):
        proxy = self
        self.upstream = upstream.rstrip("/")
        self.faults: list = []
        self.seen = 0
        self.only: str | None = None
        self.page_limit: int | None = None
        self.hang_seconds = 3.0
        self.log: list[tuple] = []  # (monotonic time, method, path, action) of every request

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                self._forward(self.rfile.read(length))

            def _forward(self, body):
                proxy.seen += 1
                path = self.path
                if proxy.page_limit is not None and self.path.split("?")[0].endswith("/search"):
                    if body:
                        query = json.loads(body)
                        query["limit"] = proxy.page_limit
                        body = json.dumps(query).encode()
                    elif "limit=" in path:
                        path = re.sub(r"limit=\d+", f"limit={proxy.page_limit}", path)
                eligible = proxy.only is None or proxy.only in self.path or proxy.only.encode() in (body or b"")
                action = proxy.faults.pop(0) if proxy.faults and eligible else None
                proxy.log.append((time.monotonic(), self.command, self.path, action))
                if isinstance(action, tuple):
                    action, headers = action
                else:
                    headers = {}
                if isinstance(action, int):
                    self.send_response(action)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action == "hang":
                    time.sleep(proxy.hang_seconds)
                if action in ("drop", "hang"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "slow":
                    time.sleep(2)
                request = urllib.request.Request(
                    proxy.upstream + path, data=body, method=self.command,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )
                with urllib.request.urlopen(request, timeout=30) as answer:
                    # rewrite links so paging goes through the proxy too
                    data = answer.read().replace(proxy.upstream.encode(), proxy.url.encode())
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if action == "truncate":  # the connection drops mid-body
                        self.wfile.write(data[:len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(data)

        super().__init__(Handler)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class PgStacServer:
    """PostgreSQL + PostGIS with pgstac, and stac-fastapi-pgstac under uvicorn, on loopback."""

    def __init__(self):
        self.bin = postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="pgstac-"))
        self.pg_port, self.api_port = free_port(), free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.pg_port}/stac"
        self.url = f"http://127.0.0.1:{self.api_port}"
        self._api = None

    def _as_postgres(self, *command: str) -> None:
        prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
        subprocess.run([*prefix, " ".join(command)], check=True, capture_output=True, timeout=120)

    def start(self) -> PgStacServer:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        self._as_postgres(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "pg.log"),
                          "-o", f"'-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {self.folder}'",
                          "-w", "start")
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port),
                          "-U", "postgres", "stac")
        self.pypgstac("migrate")
        env = {**os.environ, "PGUSER": "postgres", "PGPASSWORD": "x", "PGHOST": "127.0.0.1",
               "PGPORT": str(self.pg_port), "PGDATABASE": "stac", "POSTGRES_USER": "postgres",
               "POSTGRES_PASS": "x", "POSTGRES_HOST_READER": "127.0.0.1",
               "POSTGRES_HOST_WRITER": "127.0.0.1", "POSTGRES_PORT": str(self.pg_port),
               "POSTGRES_DBNAME": "stac"}
        self._api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"],
            env=env, stdout=open(self.folder / "api.log", "w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return self
            except OSError:
                if self._api.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("stac-fastapi-pgstac did not start: "
                                       + (self.folder / "api.log").read_text()[-2000:])
                time.sleep(0.3)

    def pypgstac(self, *args: str) -> None:
        pypgstac = Path(sys.executable).parent / "pypgstac"
        subprocess.run([str(pypgstac), *args, "--dsn", self.dsn], check=True, capture_output=True,
                       timeout=120)

    def load(self, collections: list[dict], items: list[dict]) -> None:
        for kind, records in (("collections", collections), ("items", items)):
            path = self.folder / f"{kind}.ndjson"
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
            self.pypgstac("load", kind, str(path), "--method", "upsert")

    def stop(self) -> None:
        if self._api is not None:
            self._api.terminate()
            try:
                self._api.wait(10)
            except subprocess.TimeoutExpired:
                self._api.kill()
        if (self.folder / "data").exists():
            try:
                self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


class RecordingProxy(_Server):
    """An HTTP proxy on loopback that forwards nothing: it records every request it is asked
    to make (a browser pointed at it cannot reach any other machine) and answers 403."""

    def __init__(self):
        proxy = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _refuse(self):
                proxy.requests.append(f"{self.command} {self.path}")
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_CONNECT = do_PUT = do_OPTIONS = _refuse

        super().__init__(Handler)


def screenshot(url: str, out: Path, proxy: str, size: tuple[int, int] = (1024, 768)) -> None:
    """Headless Debian Chromium: a screenshot of ``url``, every network request via ``proxy``."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run([
            shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-quic", f"--user-data-dir={profile}",
            # Chromium's own background traffic (updates, safe browsing, metrics), not the page's
            "--disable-extensions", "--disable-default-apps", "--disable-domain-reliability",
            "--disable-client-side-phishing-detection", "--no-pings", "--metrics-recording-only",
            "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
            "--safebrowsing-disable-auto-update",
            f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>",
            f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=8000",
            f"--screenshot={out}", url,
        ], check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
