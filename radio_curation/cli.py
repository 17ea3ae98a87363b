"""The ``radio-curation`` command: ``runs`` (the run store) and ``sky`` (synthetic skies)."""

from __future__ import annotations

import argparse
import sys

from radio_curation.errors import USER_ERROR_EXIT, RadioCurationError
from radio_curation.runs import cli as runs_cli
from radio_curation.sky import cli as sky_cli


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(prog="radio-curation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runs_cli.add_parser(sub)
    sky_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RadioCurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
