"""Which raw queue entries a worker accepts: exactly what our producers send, nothing else."""

import base64
import datetime
import pickle

import pytest

from benchmarks.poison import edit, genuine_entry, with_body
from poundcam.broker import envelope
from poundcam.broker.envelope import check_entry
from poundcam.constants import ETA_AHEAD_MAX_S, RETRY_DELAY_MAX_S
from poundcam.messaging import MAX_ITEM_ID, MessageError, make_message, parse_message

LIMIT = 1 << 20


def test_a_genuine_message_is_accepted():
    assert check_entry(genuine_entry(), LIMIT) is None
    assert check_entry(genuine_entry(countdown=5), LIMIT) is None  # an ETA (retries)
    # the longest retry wait, and an ETA long past (it runs at once)
    assert check_entry(genuine_entry(countdown=RETRY_DELAY_MAX_S), LIMIT) is None
    assert (
        check_entry(edit(genuine_entry(), lambda e: e["headers"].update(eta="2001-01-01T00:00")), LIMIT)
        is None
    )


def test_a_genuine_entry_is_the_one_made_whatever_the_in_memory_broker_holds():
    """kombu's in-memory broker is one per process: a message left there by other code must not
    come out in place of the entry asked for (it would lack the ETA asked for, for one)."""
    import json

    from celery import Celery

    from poundcam.messaging import QUEUE, TASK_NAME, celery_config
    from poundcam.settings import Settings

    other = Celery("other-producer")
    other.conf.update(celery_config(Settings.from_env({})))
    other.conf.broker_url = "memory://"
    other.send_task(TASK_NAME, kwargs={"message": make_message("left-behind", [])}, queue=QUEUE)
    entry = json.loads(genuine_entry(make_message("mine", [(1, "s3://x/y")]), countdown=5))
    assert entry["headers"]["eta"] is not None
    assert json.loads(base64.b64decode(entry["body"]))[1]["message"]["job_id"] == "mine"


@pytest.mark.parametrize(
    "eta, detail",
    [
        (lambda now: (now + datetime.timedelta(seconds=ETA_AHEAD_MAX_S + 60)).isoformat(), "s ahead"),
        # naive: read as UTC
        (lambda now: (now + datetime.timedelta(days=2)).replace(tzinfo=None).isoformat(), "s ahead"),
        (lambda now: "9999-12-31T23:59:59-12:00", "out of range"),
        (lambda now: "0001-01-01T00:00:00+14:00", "out of range"),
        (lambda now: 1767225600, "not an ISO 8601 time"),
        (lambda now: "", "not an ISO 8601 time"),
    ],
)
def test_an_eta_the_worker_would_hold_or_drop_is_refused(eta, detail):
    now = datetime.datetime.now(datetime.timezone.utc)
    raw = edit(genuine_entry(), lambda e: e["headers"].update(eta=eta(now)))
    refusal = check_entry(raw, LIMIT)
    assert refusal is not None and refusal.reason == envelope.BAD_ENVELOPE and detail in refusal.detail


def test_a_malformed_item_entry_or_enqueued_at_is_set_aside_and_the_rest_read():
    message = make_message("job", [(1, "s3://b/a"), (MAX_ITEM_ID, "s3://b/b")])
    message["items"] += [{"item_id": MAX_ITEM_ID + 1, "uri": "s3://b/c"}, {"item_id": 0}]
    for enqueued, read in ((10**400, None), (float("inf"), None), (True, None), ("1", None), (12, 12.0)):
        parsed = parse_message({**message, "enqueued_at": enqueued})
        assert parsed.items == [(1, "s3://b/a"), (MAX_ITEM_ID, "s3://b/b")]
        assert parsed.invalid == [f"items[{n}]: no item_id from 1 to {MAX_ITEM_ID}" for n in (2, 3)]
        assert parsed.enqueued_at == read


@pytest.mark.parametrize("job_id", ["job\x00", "job\ud800", "jöb", "job\n", ""])
def test_a_job_id_that_is_not_printable_ascii_is_refused(job_id):
    with pytest.raises(MessageError, match="printable ASCII"):
        parse_message(make_message(job_id, []))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda g: b"\xff\xfe not json", envelope.NOT_JSON),
        (lambda g: b"{truncated", envelope.NOT_JSON),
        (lambda g: b"[1, 2, 3]", envelope.BAD_ENVELOPE),
        (lambda g: b"42", envelope.BAD_ENVELOPE),
        (lambda g: b'{"body": "x"}', envelope.BAD_ENVELOPE),
        (lambda g: edit(g, lambda e: e["properties"].pop("delivery_tag")), envelope.BAD_ENVELOPE),
        (lambda g: edit(g, lambda e: e["properties"].update(delivery_info=[])), envelope.BAD_ENVELOPE),
        (
            lambda g: edit(g, lambda e: e["headers"].update(compression="application/x-gzip")),
            envelope.BAD_ENVELOPE,
        ),
        (lambda g: edit(g, lambda e: e["headers"].update(eta="tomorrow")), envelope.BAD_ENVELOPE),
        (lambda g: edit(g, lambda e: e["headers"].update(timelimit="x")), envelope.BAD_ENVELOPE),
        (lambda g: edit(g, lambda e: e["headers"].update(id=7)), envelope.BAD_ENVELOPE),
        (lambda g: edit(g, lambda e: e.update(body="%%% not base64 %%%")), envelope.BAD_BODY_ENCODING),
        (
            lambda g: edit(g, lambda e: e["properties"].update(body_encoding="hex")),
            envelope.BAD_BODY_ENCODING,
        ),
        (
            lambda g: edit(
                g,
                lambda e: e.update(
                    {
                        "content-type": "application/x-python-serialize",
                        "content-encoding": "binary",
                        "body": base64.b64encode(pickle.dumps(((), {}, {}))).decode(),
                    }
                ),
            ),
            envelope.UNSUPPORTED_CONTENT,
        ),
        (
            lambda g: edit(g, lambda e: e.update({"content-type": "application/x-yaml"})),
            envelope.UNSUPPORTED_CONTENT,
        ),
        (lambda g: with_body(g, {"message": {}}), envelope.BAD_BODY),
        (lambda g: with_body(g, [[], {}]), envelope.BAD_BODY),
        (lambda g: with_body(g, b"\x80 not json"), envelope.BAD_BODY),
        (
            lambda g: edit(g, lambda e: e["headers"].update(task="celery.backend_cleanup")),
            envelope.UNKNOWN_TASK,
        ),
        (lambda g: edit(g, lambda e: e["headers"].pop("task")), envelope.UNKNOWN_TASK),
        (lambda g: with_body(g, [[1], {}, {}]), envelope.BAD_ARGUMENTS),
        (lambda g: with_body(g, [[], {"message": {}, "x": 1}, {}]), envelope.BAD_ARGUMENTS),
        (
            lambda g: with_body(g, [[], {"message": make_message("j", [])}, {"callbacks": [{"task": "x"}]}]),
            envelope.BAD_ARGUMENTS,
        ),
        (lambda g: with_body(g, [[], {"message": {"job_id": 3, "items": []}}, {}]), envelope.BAD_MESSAGE),
        (lambda g: with_body(g, [[], {"message": "hello"}, {}]), envelope.BAD_MESSAGE),
        (lambda g: g + b" " * LIMIT, envelope.OVERSIZED),
    ],
)
def test_every_other_entry_is_refused_with_its_reason(make, reason):
    refusal = check_entry(make(genuine_entry()), LIMIT)
    assert refusal is not None and refusal.reason == reason
    assert len(refusal.detail) <= 300


def test_reasons_are_stable_and_distinct():
    assert len(set(envelope.REASONS)) == len(envelope.REASONS)


def test_the_shared_poison_corpus_is_refused_as_labelled():
    from benchmarks.poison import poison_entries

    for name, (raw, reason) in poison_entries(LIMIT).items():
        refusal = check_entry(raw, LIMIT)
        assert refusal is not None and refusal.reason == reason, name


def test_operations_doc_lists_every_dead_letter_reason():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("## Queue entries a worker refuses", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert listed == list(envelope.REASONS)
