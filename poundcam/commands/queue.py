"""Queue commands: `poundcam dead-letters list|show|requeue|purge` and `poundcam sweep`."""

from __future__ import annotations

import datetime
import json

from .common import add_db_option, settings_for


def register(sub) -> None:
    p = sub.add_parser(
        "dead-letters",
        help="queue entries the workers refused, with the reason",
        description="Entries of the 'poundcam' queue that no worker could run "
        "(not JSON, a wrong envelope, an unknown task, pickle, "
        "oversized, ...), kept in Redis at POUNDCAM_BROKER_URL.",
    )
    dl = p.add_subparsers(dest="dl_command", metavar="ACTION", required=True)
    ls = dl.add_parser("list", help="one line per dead letter, newest first")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)
    show = dl.add_parser("show", help="a dead letter's reason and its bytes")
    show.add_argument("id", help="the dead letter's id (or a unique prefix)")
    show.set_defaults(handler=_show)
    rq = dl.add_parser("requeue", help="put a dead letter back on the queue")
    rq.add_argument("id")
    rq.set_defaults(handler=_requeue)
    pg = dl.add_parser("purge", help="delete one dead letter, or all with --all")
    pg.add_argument("id", nargs="?")
    pg.add_argument("--all", action="store_true", help="delete every dead letter")
    pg.set_defaults(handler=_purge)

    p = sub.add_parser(
        "sweep",
        help="requeue items left running by a worker that is gone",
        description="Items 'running' for longer than POUNDCAM_VISIBILITY_TIMEOUT_S "
        "go back to the queue, or fail with retries_exhausted after "
        "POUNDCAM_MAX_ATTEMPTS claims; items 'queued' for that long that no message "
        "in the broker names (lost with a broker connection or its data) are sent "
        "again. Workers also sweep every POUNDCAM_SWEEP_INTERVAL_S.",
    )
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    add_db_option(p)
    p.set_defaults(handler=_sweep)


def _client():
    import redis

    from ..settings import Settings

    return redis.Redis.from_url(Settings.from_env().broker_url, socket_timeout=30, socket_connect_timeout=10)


def _when(epoch) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%SZ"
        )
    except (TypeError, ValueError, OverflowError):
        return "-"


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _list(args) -> int:
    from ..broker import deadletters

    records = deadletters.entries(_client())
    if args.json:
        print(json.dumps([{k: v for k, v in _public(r).items() if k != "raw"} for r in records]))
        return 0
    for r in records:
        print(
            f"{(r.get('id') or '-')[:12]}  {_when(r.get('at'))}  {r.get('reason', '-'):<24} "
            f"{r.get('size', '-'):>8} B  {str(r.get('detail', ''))[:80]}"
        )
    print(f"{len(records)} dead letter(s)")
    return 0


def _show(args) -> int:
    from ..broker import deadletters

    record = deadletters.find(_client(), args.id)
    raw = deadletters.raw_bytes(record)
    info = {k: v for k, v in _public(record).items() if k != "raw"}
    info["at"] = _when(record.get("at"))
    print(json.dumps(info, indent=2))
    print(f"--- the entry ({len(raw)} of {record.get('size')} bytes kept) ---")
    print(raw.decode("utf-8", "backslashreplace"))
    return 0


def _requeue(args) -> int:
    from ..broker import deadletters

    client = _client()
    record = deadletters.find(client, args.id)
    deadletters.requeue(client, record)
    print(f"dead letter {record['id']} requeued on {record.get('queue')}")
    return 0


def _purge(args) -> int:
    from ..broker import deadletters

    if args.all == bool(args.id):
        from ..errors import InvalidRequestError

        raise InvalidRequestError("dead-letters purge: give an id or --all, not both or neither")
    client = _client()
    record = None if args.all else deadletters.find(client, args.id)
    print(f"{deadletters.purge(client, record)} dead letter(s) deleted")
    return 0


def _sweep(args) -> int:
    from ..broker.sweeper import sweep
    from ..db import make_session_factory

    settings = settings_for(args)
    sessions = make_session_factory(settings.database_url)
    try:
        swept = sweep(settings, sessions)
    finally:
        sessions.kw["bind"].dispose()
    requeued = sum(len(v) for v in swept.requeued.values())
    resent = sum(len(v) for v in swept.resent.values())
    if args.json:
        print(
            json.dumps(
                {
                    "requeued": requeued,
                    "jobs": sorted(swept.requeued),
                    "failed": swept.failed,
                    "resent": resent,
                    "resent_jobs": sorted(swept.resent),
                }
            )
        )
    else:
        print(
            f"{requeued} item(s) requeued in {len(swept.requeued)} job(s), "
            f"{len(swept.failed)} failed with retries_exhausted, "
            f"{resent} queued item(s) whose message was lost sent again in {len(swept.resent)} job(s)"
        )
    return 0
