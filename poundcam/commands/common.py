"""What several commands share: the ``--db`` option and the settings and client it selects, the
model options of the commands that load the model, the argument types they use, and the file an
output argument names."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _argument_type(convert, accept, kind: str, wanted: str):
    """An argparse type: ``convert(text)`` (else "is not {kind}"), kept when ``accept``s it
    (else "is not {wanted}")."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not accept(value):  # also refuses nan, whose comparisons are all false
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    return parse


probability = _argument_type(float, lambda v: 0.0 <= v <= 1.0, "a number", "a probability from 0 to 1")
seconds = _argument_type(float, lambda v: 0 <= v < float("inf"), "a number of seconds", "0 or more seconds")
port = _argument_type(int, lambda v: 1 <= v <= 65535, "a port number", "a port number (1 to 65535)")
positive_int = _argument_type(int, lambda v: v >= 1, "a whole number", "a positive number")


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


def output_file(text: str, default_name: str) -> Path:
    """The file an output argument names: ``text`` itself, or ``default_name`` inside it when
    ``text`` is an existing folder or ends with a slash (a folder, made if missing). Checked
    before any work, without creating anything: refused (InvalidRequestError) when that file
    is a folder or a path above it is a file. Missing folders above it are the writer's to make.
    """
    from ..errors import InvalidRequestError

    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        path = path / default_name
    if path.is_dir():
        raise InvalidRequestError(f"{path}: is a folder; name the file to write")
    for above in path.parents:
        if above.exists():
            if not above.is_dir():
                raise InvalidRequestError(f"{path}: {above} is not a folder")
            break
    return path
