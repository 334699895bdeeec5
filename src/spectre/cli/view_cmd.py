"""`spectre view OUT/STEM`: the video, the 3D head and the ARKit curves of a reconstruction, in sync, in a
local web page."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, OutputError

HELP = "play a reconstruction's video, 3D head and ARKit curves in sync in a local web page"
DESCRIPTION = """\
Serve a page on 127.0.0.1 that plays the video of a finished reconstruction next to its animated 3D head
(orbit with the mouse) and draws the ARKit curves under it with a cursor that follows playback; click or
drag on the curves to seek. OUT/STEM names the results (OUT/STEM.yaml). The head is STEM's .glb
(--meshes glb) or, without one, is built from the .npz. Works offline (three.js is bundled).
Stop with Ctrl-C."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="OUT/STEM", help="results to show (the output folder and the video's stem)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--video", metavar="FILE", help="video to play (default: OUT/STEM.mp4, else the input video)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL; do not open a browser")


def run(args: argparse.Namespace) -> int:
    import shutil
    import webbrowser

    from ..view.files import find_view_files
    from ..view.server import ViewServer

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number")
    files = find_view_files(args.target, args.video)
    try:
        try:
            server = ViewServer(files, args.port)
        except OSError as exc:
            raise OutputError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
        print(f"spectre view: {server.url}  (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(server.url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        for p in files.cleanup:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    print("spectre view: stopped", file=sys.stderr)
    return 0
