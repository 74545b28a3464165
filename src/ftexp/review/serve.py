"""``ftexp review serve``: a local review page for one rater (standard library only).

Routes: ``GET /`` the page (``page.html``, inline JS and CSS); ``GET /api/state`` how many outputs and
where to resume; ``GET /api/item/<n>`` one output as :meth:`Sitting.item` shows it (no automated scores);
``POST /api/item/<n>`` one answer (JSON ``{correctness, helpfulness, tone, notes}``; 400 with a message
and nothing written when a rating is out of its scale). Bound to 127.0.0.1 by default; on any other
address every request must carry the random ``token`` printed at start (403 otherwise).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from ftexp.review.schema import SCALES
from ftexp.review.sitting import Sitting

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ITEM = re.compile(r"^/api/item/(\d+)$")
MAX_BODY = 1 << 20


def page() -> bytes:
    scales = json.dumps({c: list(v) for c, v in SCALES.items()})
    html = files("ftexp.review").joinpath("page.html").read_text(encoding="utf-8")
    return html.replace("/*SCALES*/null", scales).encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    server: "ReviewServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the terminal shows the URL, not a line per click

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def _allowed(self) -> Optional[str]:
        url = urlparse(self.path)
        token = self.server.token
        if token and not secrets.compare_digest(parse_qs(url.query).get("token", [""])[0], token):
            self._json(HTTPStatus.FORBIDDEN, {"error": "this server needs the token printed at its start (?token=...)"})
            return None
        return url.path

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self._allowed()
        if path is None:
            return
        sitting = self.server.sitting
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page(), "text/html")
        elif path == "/api/state":
            with self.server.mutex:
                self._json(HTTPStatus.OK, {"n": len(sitting), "n_rated": sitting.n_rated(),
                                           "resume_at": sitting.resume_at(), "rater": sitting.rater})
        elif (m := ITEM.match(path)) and int(m.group(1)) < len(sitting):
            with self.server.mutex:
                self._json(HTTPStatus.OK, sitting.item(int(m.group(1))))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self._allowed()
        if path is None:
            return
        m = ITEM.match(path)
        if not m:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "answer too large"})
        try:
            values = json.loads(self.rfile.read(length).decode("utf-8"))
            if not isinstance(values, dict):
                raise ValueError("expected a JSON object {correctness, helpfulness, tone, notes}")
            with self.server.mutex:
                self.server.sitting.answer(int(m.group(1)), values)
                state = {"ok": True, "n_rated": self.server.sitting.n_rated(),
                         "resume_at": self.server.sitting.resume_at()}
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"not saved: {exc}"})
        self._json(HTTPStatus.OK, state)


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sitting: Sitting, host: str = "127.0.0.1", port: int = 0):
        self.sitting = sitting
        self.token = None if host in LOOPBACK else secrets.token_urlsafe(16)
        self.mutex = threading.Lock()  # one answer at a time: each rewrites the run's file
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")
