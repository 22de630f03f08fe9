"""`kndnet app`: build the in-browser app, and optionally serve it on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import command


def _app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the static app (index.html, model, runtime)")
    p.add_argument("--model", help="int8 ONNX model from `kndnet export` (default: the shipped student)")
    p.add_argument("--serve", action="store_true", help="then serve it on http://127.0.0.1:PORT/ until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free port)")


@command("app", "build the offline in-browser app (ONNX Runtime Web), optionally serve it locally", _app_args)
def _app(args: argparse.Namespace) -> int:
    from kndnet.app import build_app
    built = build_app(Path(args.out), args.model)
    print(f"page weight: model {built.model_bytes / 1024:.0f} KB + runtime {built.runtime_bytes / 1024:.0f} KB + "
          f"code {built.code_bytes / 1024:.0f} KB = {built.total_bytes / 1024:.0f} KB "
          f"({built.gzip_bytes / 1024:.0f} KB gzip-compressed)")
    print(f"wrote {args.out}/index.html; serve the folder from any static host (HTTPS for offline use)")
    if args.serve:
        _serve(Path(args.out), args.port)
    return 0


def _serve(folder: Path, port: int) -> None:
    from kndnet.app.serve import make_server
    server = make_server(folder, port)
    print(f"serving {folder} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
