"""The ``radio-curation`` command: ``runs`` (the run store) and ``sky`` (synthetic skies)."""

from __future__ import annotations

import argparse
import sys

from radio_curation.runs import cli as runs_cli


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="radio-curation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runs_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return runs_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
