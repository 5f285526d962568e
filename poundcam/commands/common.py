"""What several commands share: the ``--db`` option and the settings and client it selects, the
model options of the commands that load the model, and the argument types they use."""

from __future__ import annotations

import argparse


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1 (``nan`` and ``inf`` are not)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability from 0 to 1")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or more seconds")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_model_options(parser: argparse.ArgumentParser, batch_and_threshold: bool = True) -> None:
    """``--weights``, ``--device`` and, unless told not to, ``--batch-size`` and ``--threshold``:
    the model a command loads and how it labels, instead of the matching POUNDCAM_* settings."""
    from ..constants import Device, values

    parser.add_argument("--weights", default=None, help="checkpoint (default POUNDCAM_WEIGHTS)")
    parser.add_argument("--device", choices=values(Device), default=None)
    if batch_and_threshold:
        parser.add_argument("--batch-size", type=positive_int, default=None, help="images per model batch")
        parser.add_argument(
            "--threshold", type=probability, default=None, help="P(fake) for the label 'fake' (0 to 1)"
        )


def model_overrides(args: argparse.Namespace) -> dict:
    """The settings :func:`add_model_options`' options give, those given only."""
    given = {
        "weights": args.weights,
        "device": args.device,
        "batch_size": getattr(args, "batch_size", None),
        "threshold": getattr(args, "threshold", None),
    }
    return {name: value for name, value in given.items() if value is not None}


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db URL``: the database a command reads or writes, instead of POUNDCAM_DATABASE_URL."""
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database URL (default POUNDCAM_DATABASE_URL, else sqlite:///./poundcam.db)",
    )


def settings_for(args: argparse.Namespace, **overrides):
    """Settings from the environment with the command line's ``--db`` and ``overrides``."""
    from ..settings import Settings

    if getattr(args, "db", None):
        overrides["database_url"] = args.db
    return Settings.from_env(**overrides)


def client_for(args: argparse.Namespace, **overrides):
    """A :class:`poundcam.client.Client` on :func:`settings_for`'s settings."""
    from ..client import Client

    return Client(settings_for(args, **overrides))
