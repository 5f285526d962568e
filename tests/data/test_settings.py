import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from poundcam.errors import PoundcamError
from poundcam.settings import Settings, SettingsError, env_name


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///./poundcam.db"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.heatmap_prefix == "heatmaps/"
    assert s.allowed_buckets == ()
    assert (s.device, s.batch_size, s.threshold, s.cam_layer, s.cam_target) == (
        "auto",
        32,
        0.5,
        -1,
        "contrastive",
    )
    assert s.max_image_bytes == 50 * 1024 * 1024
    assert s.max_image_pixels == 8192 * 8192
    assert (s.task_batch_size, s.visibility_timeout_s, s.metrics_port) == (64, 3600, 9808)
    assert not s.embedded


def test_reads_environment_and_overrides_win():
    env = {
        "POUNDCAM_DATABASE_URL": "postgresql://db/x",
        "POUNDCAM_BATCH_SIZE": "8",
        "POUNDCAM_THRESHOLD": "0.7",
        "POUNDCAM_ALLOWED_BUCKETS": " in-a, in-b ,,",
        "POUNDCAM_HEATMAP_BUCKET": "maps",
        "POUNDCAM_HEATMAP_PREFIX": "hm",
        "POUNDCAM_CAM_LAYER": "-2",
        "POUNDCAM_DEVICE": "cpu",
        "POUNDCAM_S3_ENDPOINT_URL": "",
        "POUNDCAM_LOCAL_ROOT": "/data/out",
        "POUNDCAM_ALLOWED_ROOTS": "/a:/b",
    }
    s = Settings.from_env(env, batch_size=4)
    assert s.database_url == "postgresql://db/x"
    assert s.batch_size == 4 and s.threshold == 0.7 and s.cam_layer == -2
    assert s.allowed_buckets == ("in-a", "in-b")
    assert s.heatmap_bucket == "maps" and "maps" not in s.allowed_buckets
    assert s.heatmap_prefix == "hm/"
    assert s.s3_endpoint_url is None
    assert s.embedded and s.allowed_roots == ("/a", "/b")


ROOT = Path(__file__).resolve().parents[2]
SETTING_VARIABLES = {env_name(f.name) for f in fields(Settings)}
# the test harness's own variables (docs/pipeline-testing.md), not settings of poundcam
TEST_VARIABLES = {"POUNDCAM_TEST_PG", "POUNDCAM_TEST_REDIS", "POUNDCAM_REQUIRE_CHROMIUM"}
VARIABLE = re.compile(r"POUNDCAM_[A-Z0-9_]*[A-Z0-9]")
# files of the deployment and the development scripts, where variables other than the
# settings may be read (docs/configuration.md, "Variables outside the service's settings")
OUTSIDE_FILES = ("docker-compose.yml", "Dockerfile", "ops", "scripts", ".ci")
TABLE_ROW = re.compile(r"^\|\s*`(POUNDCAM_[A-Z0-9_]+)`\s*\|")


def _table_variables(path: Path, heading: str) -> list[str]:
    """The variables of the first markdown table after ``heading``, in order."""
    lines = path.read_text().splitlines()
    start = lines.index(heading)
    found, in_table = [], False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            in_table = True
            m = TABLE_ROW.match(line)
            if m:
                found.append(m.group(1))
        elif in_table:
            break
    return found


@pytest.mark.parametrize(
    "doc,heading", [("docs/configuration.md", "# Configuration"), ("README.md", "## Configuration")]
)
def test_the_configuration_tables_list_every_setting_and_no_other(doc, heading):
    listed = _table_variables(ROOT / doc, heading)
    assert len(listed) == len(set(listed)), f"{doc}: a variable is listed twice"
    assert set(listed) == SETTING_VARIABLES


def _outside_variables() -> set[str]:
    """The POUNDCAM_* names the deployment and the scripts use that are not settings."""
    names = set()
    for entry in OUTSIDE_FILES:
        root = ROOT / entry
        for path in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
            names |= set(VARIABLE.findall(path.read_text(errors="replace")))
    return names - SETTING_VARIABLES


def test_the_variables_outside_the_settings_are_listed_as_such():
    outside = _outside_variables()
    assert outside >= {"POUNDCAM_VERSION", "POUNDCAM_WEIGHTS_DIR", "POUNDCAM_VENV"}
    listed = _table_variables(ROOT / "docs/configuration.md", "## Variables outside the service's settings")
    assert set(listed) == outside


def test_every_variable_named_in_code_and_docs_is_a_setting():
    """A POUNDCAM_* name in the library, the workers, the migrations or the docs is a setting
    (or, in the docs, one of the test harness's variables or of the deployment's and the
    scripts' own)."""
    named = {}
    for folder in ("poundcam", "workers", "migrations"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != ROOT / "poundcam" / "settings.py":  # its docstring says POUNDCAM_X
                for name in VARIABLE.findall(path.read_text()):
                    named.setdefault(name, str(path.relative_to(ROOT)))
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for name in set(VARIABLE.findall(path.read_text())) - TEST_VARIABLES - _outside_variables():
            named.setdefault(name, str(path.relative_to(ROOT)))
    assert {name: where for name, where in named.items() if name not in SETTING_VARIABLES} == {}


ENV_READERS = {("os", "environ"), ("os", "environb"), ("os", "getenv"), ("os", "getenvb")}


def _environment_reads(path: Path):
    """(line, what) of each use of the environment in a module that is not a lookup of one
    literal, non-POUNDCAM_ name: ``os.environ["X"]``, ``os.environ.get("X")``,
    ``os.getenv("X")``, ``"X" in os.environ``. Anything else (a computed name, the whole
    mapping handed on) counts as a read of POUNDCAM_ variables."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    imported = {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for a in node.names
        if ("os", a.name) in ENV_READERS
    }

    def literal(node) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and not node.value.startswith("POUNDCAM_")
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            hit = (node.value.id, node.attr) in ENV_READERS
            name = node.attr
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            hit, name = node.id in imported, node.id
        else:
            continue
        if not hit:
            continue
        up = parents.get(node)
        if name.startswith("getenv"):
            ok = isinstance(up, ast.Call) and up.func is node and up.args and literal(up.args[0])
        elif isinstance(up, ast.Subscript) and up.value is node:
            ok = literal(up.slice)
        elif isinstance(up, ast.Attribute) and up.attr == "get":
            call = parents.get(up)
            ok = isinstance(call, ast.Call) and call.func is up and bool(call.args) and literal(call.args[0])
        elif isinstance(up, ast.Compare) and node in up.comparators:
            ok = literal(up.left)
        else:
            ok = False
        if not ok:
            yield node.lineno, ast.unparse(up if up is not None else node)


def test_only_settings_reads_poundcam_variables():
    """Settings.from_env is the one reader of POUNDCAM_* variables: other modules take the
    settings (or values from them) as arguments. They may look up other libraries' variables
    by name (XDG_CACHE_HOME)."""
    readers = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for folder in ("poundcam", "workers", "migrations")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "poundcam" / "settings.py"
        for line, what in _environment_reads(path)
    ]
    assert readers == []


def test_the_environment_check_sees_every_kind_of_read(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom os import environ as env, getenv\n"
        "a = os.environ.get('XDG_CACHE_HOME')\n"
        "b = os.environ['POUNDCAM_WEIGHTS']\n"
        "c = 'POUNDCAM_DATABASE_URL' in os.environ\n"
        "d = getenv('POUNDCAM_DEVICE')\n"
        "e = env.get(name)\n"
        "f = dict(os.environ)\n"
        "g = 'HOME' in env\n"
    )
    assert sorted(line for line, _ in _environment_reads(module)) == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    "var,value",
    [
        ("POUNDCAM_BATCH_SIZE", "many"),
        ("POUNDCAM_BATCH_SIZE", "0"),
        ("POUNDCAM_THRESHOLD", "1.5"),
        ("POUNDCAM_THRESHOLD", "half"),
        ("POUNDCAM_DEVICE", "tpu"),
        ("POUNDCAM_CAM_TARGET", "gradcam"),
        ("POUNDCAM_MAX_IMAGE_BYTES", "-1"),
        ("POUNDCAM_METRICS_PORT", "70000"),
        ("POUNDCAM_WEIGHTS_SHA256", "abc"),
        ("POUNDCAM_HEATMAP_PREFIX", "/abs/"),
        ("POUNDCAM_HEATMAP_PREFIX", "a/../b/"),
        ("POUNDCAM_ALLOWED_BUCKETS", "a/b"),
        ("POUNDCAM_COMPILE", "yes"),
        ("POUNDCAM_JPEG_ROUNDTRIP", "nvjpeg"),
        ("POUNDCAM_PREPROCESS", "fast"),
        ("POUNDCAM_READY_FILE", " "),
        ("POUNDCAM_BROKER_URL", "amqp://guest@127.0.0.1:5672//"),
        ("POUNDCAM_BROKER_URL", "bogus"),
    ],
)
def test_invalid_values_name_the_variable(var, value):
    with pytest.raises(SettingsError, match=var) as info:
        Settings.from_env({var: value})
    assert isinstance(info.value, PoundcamError)


def test_invalid_override_and_unknown_setting():
    with pytest.raises(SettingsError, match="POUNDCAM_BATCH_SIZE"):
        Settings.from_env({}, batch_size="8")
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_env({}, batchsize=8)


def test_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.batch_size = 3
    assert s.replace(batch_size=3).batch_size == 3
