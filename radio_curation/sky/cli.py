"""``radio-curation sky synth``: render a synthetic LoTSS-like sky into DR2-style mosaic directories."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from astropy.io import fits

from radio_curation.errors import RadioCurationError
from radio_curation.progress import progress
from radio_curation.sky.synthetic import SkyParams, generate_sky

__all__ = ["add_parser", "cmd_synth"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sky`` command and its ``synth`` subcommand."""
    sky = subparsers.add_parser("sky", help="synthetic skies")
    sub = sky.add_subparsers(dest="sky_command", required=True)
    synth = sub.add_parser(
        "synth",
        help="render a synthetic LoTSS-like sky (mosaics/<name>/mosaic-blanked.fits, masks, truth.fits)",
        description="Render one sky model into N overlapping DR2-like mosaics (SIN, 1.5″ pixels, 6″ beam, "
        "Jy/beam, NaN borders, correlated noise, 4-D island masks) plus the truth catalogue truth.fits.",
    )
    synth.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    synth.add_argument("--mosaics", type=int, default=4, help="number of mosaics (default 4)")
    synth.add_argument("--size", type=int, default=None, help="pixels per side (default 2048; DR2: 8938)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--overlap", type=float, default=0.35, help="fraction shared by neighbours (default 0.35)"
    )
    synth.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="pixel type")
    synth.add_argument(
        "--header",
        type=Path,
        default=None,
        help="take size, pixel scale, centre and beam from a real mosaic header (.fits or .hdr text)",
    )
    synth.set_defaults(func=cmd_synth)


def _read_header(path: Path) -> fits.Header:
    if not path.is_file():
        raise RadioCurationError(f"--header {path}: file not found.")
    try:
        if path.suffix.lower() in (".hdr", ".txt"):
            return fits.Header.fromtextfile(path)
        return fits.getheader(path)
    except (OSError, ValueError) as err:
        raise RadioCurationError(f"--header {path}: not a FITS file or FITS header text ({err}).") from err


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate the sky described by ``args``; prints the output directory last."""
    options = {"mosaics": args.mosaics, "seed": args.seed, "overlap": args.overlap, "dtype": args.dtype}
    if args.size is not None:
        options["size"] = args.size
    if args.header is not None:
        params = SkyParams.from_header(_read_header(args.header), **options)
    else:
        params = SkyParams(**options)
    start = time.perf_counter()
    with progress(params.mosaics, "rendering mosaics", unit="mosaic") as bar:
        generate_sky(args.out, params, report=lambda name: bar.advance())
    print(
        f"{params.mosaics} mosaics of {params.size}² px in {time.perf_counter() - start:.1f} s; "
        f"truth catalogue {args.out / 'truth.fits'}",
        file=sys.stderr,
    )
    print(args.out)
    return 0
