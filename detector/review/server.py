"""The review server: ``http.server`` on 127.0.0.1 only. Torch-free, standard library.

- ``GET /...``: files inside the review folder only. The path is URL-decoded, resolved (links
  and ``..`` followed) and must stay inside the folder, else 403; hidden files (``.tmp.*``,
  locks) are not served.
- ``GET /api/decisions``: ``{"decisions": [...], "counts": {...}}``.
- ``POST /api/decision``: one decision (:func:`detector.review.decisions.validate`), or
  ``{"id": ..., "undo": true}`` to remove one. Every change rewrites ``decisions.json``,
  ``.geojson`` and ``.gpkg`` atomically (temporary file, then ``os.replace``) before the
  answer, so a browser closed at any moment loses nothing it was told was saved.

Requests whose ``Host`` is not this server's loopback address, or whose ``Origin`` is another
site, are refused (403): a web page elsewhere cannot write decisions through the analyst's
browser, and DNS rebinding gets nowhere. Every answer carries a ``Content-Security-Policy``
of ``'self'``.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from detector.review.decisions import counts, load_decisions, save_decisions, validate

log = logging.getLogger("revet.review.server")
HOST = "127.0.0.1"
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")
MAX_BODY = 1 << 16


class ReviewStore:
    """Decisions of one review folder, in memory, saved on every change (thread-safe)."""

    def __init__(self, root: Path):
        self.root = root
        self.review = json.loads((root / "review.json").read_text())
        self.classes = list(self.review["classes"])
        self._lock = threading.Lock()
        self._items = {d["id"]: validate(d, self.classes) for d in load_decisions(root)}

    def snapshot(self) -> dict:
        with self._lock:
            items = list(self._items.values())
        return {"decisions": items, "counts": counts(items)}

    def apply(self, body: dict) -> dict:
        with self._lock:
            if isinstance(body, dict) and body.get("undo"):
                did = body.get("id")
                if not isinstance(did, str):
                    raise ValueError("undo: 'id' must be a string")
                self._items.pop(did, None)
            else:
                d = validate(body, self.classes)
                self._items.pop(d["id"], None)  # re-decided: moves to the end (decision order)
                self._items[d["id"]] = d
            return save_decisions(self.root, self.review, list(self._items.values()))


def make_handler(root: Path, store: ReviewStore, port_box: list):
    class Handler(SimpleHTTPRequestHandler):
        server_version = "revet-review"
        sys_version = ""

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, fmt, *args):  # quiet: debug log, not stderr per request
            log.debug("%s " + fmt, self.address_string(), *args)

        def end_headers(self):
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store" if self.path.startswith("/api/") else "max-age=3600")
            super().end_headers()

        def _allowed_origin(self) -> bool:
            port = port_box[0]
            ok = {f"{HOST}:{port}", f"localhost:{port}"}
            if self.headers.get("Host") not in ok:
                return False
            origin = self.headers.get("Origin")
            return origin is None or origin in {f"http://{h}" for h in ok}

        def _json(self, code: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _inside(self) -> Path | None:
            rel = unquote(urlsplit(self.path).path)
            if "\x00" in rel:
                return None
            p = (root / rel.lstrip("/")).resolve()
            if p != root and root not in p.parents:
                return None
            if any(part.startswith(".") for part in p.relative_to(root).parts):
                return None
            return p

        def do_GET(self):  # noqa: N802 (http.server's names)
            if not self._allowed_origin():
                return self._json(403, {"error": "forbidden host or origin"})
            if urlsplit(self.path).path == "/api/decisions":
                return self._json(200, store.snapshot())
            if self._inside() is None:
                return self._json(403, {"error": "outside the review folder"})
            return super().do_GET()

        def do_HEAD(self):  # noqa: N802
            if not self._allowed_origin() or self._inside() is None:
                self.send_response(403)
                self.end_headers()
                return
            return super().do_HEAD()

        def list_directory(self, path):  # no folder listings
            self.send_error(404)
            return None

        def do_POST(self):  # noqa: N802
            if not self._allowed_origin():
                return self._json(403, {"error": "forbidden host or origin"})
            if urlsplit(self.path).path != "/api/decision":
                return self._json(404, {"error": "unknown endpoint"})
            n = int(self.headers.get("Content-Length") or 0)
            if not 0 < n <= MAX_BODY:
                return self._json(400, {"error": f"body must be 1..{MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(n))
                result = store.apply(body)
            except (ValueError, json.JSONDecodeError) as e:
                return self._json(400, {"error": str(e)})
            return self._json(200, {"ok": True, "counts": result})

    return Handler


def make_server(review_dir, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``review_dir`` bound to 127.0.0.1:``port`` (0: a free port), not started.
    Its URL: ``f"http://127.0.0.1:{srv.server_address[1]}/"``."""
    root = Path(review_dir).resolve()
    if not (root / "review.json").exists():
        raise FileNotFoundError(f"{root}: not a review folder (no review.json); run `revet review` first")
    store = ReviewStore(root)
    port_box = [port]
    srv = ThreadingHTTPServer((HOST, port), make_handler(root, store, port_box))
    port_box[0] = srv.server_address[1]
    srv.daemon_threads = True
    return srv


def serve(review_dir, port: int = 0, *, ready=None) -> None:
    """Serve ``review_dir`` until interrupted; prints the URL (and calls ``ready(url)``)."""
    srv = make_server(review_dir, port)
    url = f"http://{HOST}:{srv.server_address[1]}/"
    print(f"review at {url}  (Ctrl-C to stop; decisions are saved in {Path(review_dir)})", flush=True)
    if ready:
        ready(url)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
