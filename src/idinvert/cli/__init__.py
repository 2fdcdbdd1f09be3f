"""The ``idinvert`` command line: one verb per application, a thin layer over the library.

Errors a user can cause print one line (``idinvert: error: …``) and exit with status 2;
Ctrl-C exits with 130. Exit status 0 means the verb finished and wrote all its output.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .. import __version__
from ..errors import IdinvertError
from . import convert, invert

VERBS = [convert, invert]


def _optional_verbs() -> list:
    """Verbs of modules that later features add; each module registers itself if importable."""
    import importlib

    verbs = []
    for name in ("edit", "apps", "align", "train", "evaluate", "attributes", "demo", "serve", "compare"):
        try:
            verbs.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return verbs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idinvert", description="In-domain GAN inversion and real image editing.")
    parser.add_argument("--version", action="version", version=f"idinvert {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in VERBS + _optional_verbs():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")
            status = args.run(args)
    except IdinvertError as exc:
        print(f"idinvert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("idinvert: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
