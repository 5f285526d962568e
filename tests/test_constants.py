"""poundcam.constants is the one source of labels, states, choices and error codes: the docs'
error-code tables, the database constraints and the settings derive from it."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from poundcam.constants import (
    DECODE_ERROR_CODES,
    ITEM_STATES,
    LABELS,
    STORAGE_ERROR_CODES,
    TRANSIENT_ERROR_CODES,
    ErrorCode,
    values,
)

ROOT = Path(__file__).resolve().parent.parent
CODE_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|(.*)$")


def _code_tables(doc: str) -> list[dict[str, list[str]]]:
    """Each markdown table of ``doc`` whose first column is "Code": {code: other cells}."""
    tables, current = [], None
    for line in (ROOT / "docs" / doc).read_text().splitlines():
        if re.match(r"^\|\s*Code\s*\|", line):
            current = {}
            tables.append(current)
        elif current is not None and line.startswith("|"):
            m = CODE_ROW.match(line)
            if m:
                assert m.group(1) not in current, f"{doc}: {m.group(1)} listed twice"
                current[m.group(1)] = [c.strip() for c in m.group(2).strip().strip("|").split("|")]
        else:
            current = None
    return tables


def test_input_handling_lists_every_error_code_and_no_other():
    """docs/input-handling.md is the one list: each ErrorCode member has a row there, and it
    has no row the enum lacks."""
    decode, storage, pipeline = _code_tables("input-handling.md")
    assert set(decode) == set(DECODE_ERROR_CODES)
    assert set(storage) == set(STORAGE_ERROR_CODES)
    assert set(decode) | set(storage) | set(pipeline) == set(values(ErrorCode))
    assert not set(pipeline) & (set(decode) | set(storage))
    transient = {code for table in (storage, pipeline) for code, cells in table.items() if cells[0] == "yes"}
    assert transient == set(TRANSIENT_ERROR_CODES)
    assert all(cells[0] in ("yes", "no") for table in (storage, pipeline) for cells in table.values())
    assert all(ErrorCode(code).transient == (code in transient) for code in values(ErrorCode))
    assert all(cells[-1] for table in (decode, storage, pipeline) for cells in table.values())


def test_other_docs_link_to_the_one_list_of_error_codes():
    others = [
        p.relative_to(ROOT / "docs")
        for p in sorted((ROOT / "docs").rglob("*.md"))
        if p.name != "input-handling.md"
    ]
    assert [str(doc) for doc in others if _code_tables(str(doc))] == []
    assert "(input-handling.md#error-codes)" in (ROOT / "docs" / "configuration.md").read_text()
    assert "(docs/input-handling.md#error-codes)" in (ROOT / "README.md").read_text()


def _reserved(table: dict[str, list[str]]) -> set[str]:
    return {code for code, cells in table.items() if cells[-1].lower().startswith("reserved")}


def _emitted_codes() -> set[str]:
    """The ErrorCode members that code outside poundcam/constants.py names other than in a
    comparison (``code == ErrorCode.NOT_FOUND`` tests a code, it does not emit one)."""
    found = set()
    for folder in ("poundcam", "workers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "constants.py":
                continue
            tree = ast.parse(path.read_text())
            compared = {id(n) for c in ast.walk(tree) if isinstance(c, ast.Compare) for n in ast.walk(c)}
            found |= {
                node.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "ErrorCode"
                and id(node) not in compared
            }
    return {ErrorCode[name].value for name in found}


def test_every_error_code_is_emitted_or_documented_as_reserved():
    reserved = set().union(*map(_reserved, _code_tables("input-handling.md")))
    emitted = _emitted_codes()
    assert emitted | reserved == set(values(ErrorCode)), "neither emitted nor reserved"
    assert not emitted & reserved, "documented as reserved, but emitted"


def _string_literals(path: Path):
    """String constants of a module that are not docstrings, field names (dict keys, subscripts
    and lookups: ``record["truncated"]``, ``record.get("truncated")``) nor the needle of an
    ``in`` test (``"truncated" in message``)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            skip.add(id(node.left))
        if isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        if isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
        ):
            skip.add(id(node.args[0]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node


def test_error_codes_are_spelled_only_in_constants():
    """Code elsewhere names ErrorCode members, so every code it can emit is in the enum (and,
    by the test above, in the docs)."""
    codes = set(values(ErrorCode))
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for folder in ("poundcam", "workers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "constants.py"
        for node in _string_literals(path)
        if node.value in codes
    ]
    assert found == []


def test_error_code_members_behave_as_their_strings():
    code = ErrorCode.NOT_FOUND
    assert code == "not_found" and str(code) == "not_found" and f"{code}" == "not_found"
    assert {"not_found": 1}[code] == 1
    assert ErrorCode.STORAGE_UNAVAILABLE.transient and not ErrorCode.NOT_FOUND.transient


def test_errors_take_only_their_own_codes():
    from poundcam.preprocess.decode import ImageDecodeError
    from poundcam.storage import StorageError

    assert StorageError("storage_unavailable", "down").transient
    assert not StorageError(ErrorCode.NOT_FOUND, "gone").transient
    assert StorageError(ErrorCode.NOT_FOUND, "gone").code is ErrorCode.NOT_FOUND
    with pytest.raises(ValueError):
        StorageError(ErrorCode.CORRUPT, "not a storage code")
    with pytest.raises(ValueError):
        ImageDecodeError(ErrorCode.NOT_FOUND, "not a decode code")


def test_check_constraints_of_the_models_match_the_migrations(tmp_path):
    """The models derive their CHECK constraints from the enums; the reviewed migrations spell
    them out. Both must give the same SQL (a new state or label needs a migration)."""
    from poundcam.db.migrate import upgrade
    from poundcam.db.models import Base, one_of

    url = f"sqlite:///{tmp_path / 'ck.db'}"
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ddl = "\n".join(
                r[0] for r in conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table'"))
            )
    finally:
        engine.dispose()
    model_checks = {
        str(c.sqltext)
        for t in Base.metadata.tables.values()
        for c in t.constraints
        if isinstance(c, sa.CheckConstraint)
    }
    assert model_checks == {one_of("label", LABELS), one_of("status", ITEM_STATES)}
    assert "label IN ('real', 'fake')" in model_checks
    for check in model_checks:
        assert f"CHECK ({check})" in ddl


def test_constants_import_without_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, poundcam.constants; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "False"


def test_argparse_choices_come_from_the_enums():
    import argparse

    from poundcam.commands import pipeline
    from poundcam.constants import CamMethod, CamTarget, CompileMode, Device

    parser = argparse.ArgumentParser()
    pipeline.register(parser.add_subparsers())
    actions = {
        a.dest: a for sub in parser._subparsers._group_actions[0].choices.values() for a in sub._actions
    }
    assert tuple(actions["device"].choices) == values(Device)
    assert tuple(actions["target"].choices) == values(CamTarget)
    assert tuple(actions["method"].choices) == values(CamMethod)
    assert tuple(actions["compile"].choices) == values(CompileMode)
    assert tuple(actions["label"].choices) == LABELS


def test_the_label_rule_compares_as_python_floats():
    """One rule for every place that labels: float32(0.7) lies just below 0.7, so it is not
    labelled fake at 0.7, although a float32 tensor comparison (which rounds the threshold to
    float32 too) would say it is."""
    import numpy as np
    import torch

    from poundcam.constants import labelled_fake

    p = float(np.float32(0.7))
    assert p < 0.7 and not labelled_fake(p, 0.7)
    assert bool(torch.tensor([p]) >= 0.7)  # what the rule must not do
    assert labelled_fake(0.5, 0.5) and labelled_fake(np.float32(0.9), 0.5)
    assert not labelled_fake(0.49, 0.5)
