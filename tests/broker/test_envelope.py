"""Which raw queue entries a worker accepts: exactly what our producers send, nothing else."""

import base64
import pickle

import pytest

from benchmarks.poison import edit, genuine_entry, with_body
from poundcam.broker import envelope
from poundcam.broker.envelope import check_entry
from poundcam.messaging import make_message

LIMIT = 1 << 20


def test_a_genuine_message_is_accepted():
    assert check_entry(genuine_entry(), LIMIT) is None
    assert check_entry(genuine_entry(countdown=5), LIMIT) is None  # an ETA (retries)


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
