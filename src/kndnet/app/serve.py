"""Serve a built app on 127.0.0.1 with the standard library, for a local try and for the browser tests.

Any static host would do; this one adds the MIME types browsers insist on for ES modules and WASM
(`application/wasm` enables streaming compilation) and asks for revalidation so a rebuild shows at once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kndnet.errors import KNDNetError

TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream", ".json": "application/json", ".css": "text/css"}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # quiet: one line per file would bury the URL


def make_server(folder: str | Path, port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for `folder` on 127.0.0.1:`port` (0: any free port); not yet serving."""
    folder = Path(folder)
    if not (folder / "index.html").is_file():
        raise KNDNetError(f"{folder}: no index.html; build the app first with `kndnet app --out {folder}`")
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise KNDNetError(f"cannot serve on 127.0.0.1:{port} ({err.strerror}); pass another --port") from None


@contextlib.contextmanager
def serve_folder(folder: str | Path, port: int = 0) -> Iterator[str]:
    """Serve `folder` in a background thread for the block; yields its URL."""
    server = make_server(folder, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
