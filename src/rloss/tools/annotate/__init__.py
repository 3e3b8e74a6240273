"""``rloss annotate``: scribble on images in a browser, see the dense mask the strokes imply, save both.

``rloss annotate --images DIR --output DIR [--classes voc|acdc|FILE] [--checkpoint CKPT] [--port N]
[--host ADDR]`` serves a page on http://127.0.0.1:N/ (another address only with --host, with a
warning). Saved annotations form a dataset folder for ``rloss fit --config configs/data/folder.yaml
--data.root OUTPUT`` (see :mod:`.store`). Modules: :mod:`.classes` (class sets), :mod:`.strokes`
(request strokes -> scribble map), :mod:`.store` (files), :mod:`.engine` (dense mask),
:mod:`.server` (HTTP API and page).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rloss.utils.errors import ArgumentParser

if TYPE_CHECKING:
    from rloss.tools.annotate.engine import Engine
    from rloss.tools.annotate.store import Store

DEFAULT_PORT = 8765


def port_number(text: str) -> int:
    """argparse type: a TCP port 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; expected an integer 0..65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; expected 0..65535")
    return port


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="rloss annotate", description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--images", type=Path, required=True, help="folder of the images to annotate")
    parser.add_argument("--output", type=Path, required=True, help="dataset folder the annotations are saved to")
    parser.add_argument("--classes", default="voc", help="voc (21 classes), acdc (4) or a file of names, one a line")
    parser.add_argument("--checkpoint", type=Path, help="trained model whose prediction is the starting mask")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free one)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this host only)")
    parser.add_argument(
        "--width", type=int, default=None, help="propagation's working long side in px (default: rloss propagate's)"
    )
    return parser.parse_args(list(argv))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``; ValueError naming the option when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: unknown address ({error.strerror})") from error
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as error:
        sock.close()
        raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error})") from error
    sock.set_inheritable(True)
    return sock


def check_folders(images: Path, output: Path) -> None:
    """ValueError naming the option unless ``images`` is a folder and ``output`` is not a file."""
    if not images.is_dir():
        raise ValueError(f"--images {images}: no such folder; expected a folder of images")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: is a file; expected a folder (created when missing)")
    if output.resolve() == images.resolve():
        raise ValueError(f"--output {output}: is the --images folder; expected another folder")


def main(argv: Sequence[str]) -> int:
    """Serve the page until interrupted; returns 0. Input errors raise ValueError (one line, exit 2)."""
    args = parse_args(argv)
    from rloss.tools.annotate.classes import class_names
    from rloss.tools.annotate.store import Store

    check_folders(args.images, args.output)
    if args.width is not None and args.width < 1:
        raise ValueError(f"--width {args.width}: expected an integer >= 1")
    store = Store(args.images, args.output, class_names(args.classes))
    if not store.images:
        raise ValueError(f"--images {args.images}: holds no image file (.png, .jpg, .tif, .npy, ...)")
    store.check_classes_file()
    from rloss.tools.annotate.engine import Engine
    from rloss.tools.prior import load_predictor

    predictor = load_predictor(args.checkpoint, len(store.classes), "--classes") if args.checkpoint else None
    engine = Engine(predictor, args.width)
    sock = listen(args.host, args.port)
    serve(store, engine, sock, args.host)
    return 0


def serve(store: Store, engine: Engine, sock: socket.socket, host: str) -> None:
    """Warm the engine up, print the address and serve on ``sock`` until interrupted."""
    import threading

    import uvicorn

    from rloss.tools.annotate.server import create_app

    loopback = is_loopback(host)
    if not loopback:
        print(
            f"rloss annotate: warning: serving on {host}: anyone who can reach this address can see the images "
            "and write to --output (there is no login)", file=sys.stderr,
        )
    app = create_app(store, engine, hosts=None if loopback else ["*"])
    threading.Thread(target=engine.warm_up, daemon=True).start()
    address, port = sock.getsockname()[:2]
    shown = f"[{address}]" if ":" in address else address
    print(f"rloss annotate: {len(store.images)} images; open http://{shown}:{port}/ (Ctrl+C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
