"""The app's settings: one declaration each in ``long_time_task/conf.py``, read lazily, and the README's table
rendered from those declarations, so the two cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.test import override_settings

from long_time_task.conf import PREFIX, Conf, conf, markdown_table
from tests.workers import ROOT

DECLARED = {setting.setting_name for setting in Conf.settings()}

# Named in the docs with the app's prefix, yet not the app's: the demo reads them from the environment for its
# own Celery beat schedule (demo/settings.py); the app reads CELERY_BEAT_SCHEDULE, never these.
DEMO_ONLY = {
    "LONG_TIME_TASK_REAPER_INTERVAL": "how often the demo's beat runs the reaper",
    "LONG_TIME_TASK_SWEEP_INTERVAL": "how often the demo's beat runs the sweeper",
    "LONG_TIME_TASK_PURGE_INTERVAL": "how often the demo's beat runs the purge",
    "LONG_TIME_TASK_MAINTENANCE_QUEUE": "the queue of the demo's beat messages",
    "LONG_TIME_TASK_SCHEDULER_INTERVAL": "how often the demo's beat sends the scheduler's tick",
}


def test_the_readme_holds_the_table_rendered_from_the_declarations():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, (
        "README.md's table of settings differs from the declarations in long_time_task/conf.py: "
        "paste long_time_task.conf.markdown_table()'s output in its place"
    )


def test_the_table_has_one_row_per_declaration_in_declaration_order():
    rows = markdown_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [setting.setting_name for setting in Conf.settings()]


def docs_text() -> str:
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_every_prefixed_setting_the_docs_name_is_declared_or_the_demos_own():
    named = set(re.findall(rf"{PREFIX}\w+", docs_text()))
    assert named - DECLARED - DEMO_ONLY.keys() == set()


def test_the_demo_only_names_are_the_demos_and_not_declared():
    demo_settings = (ROOT / "demo" / "settings.py").read_text()
    assert DEMO_ONLY.keys() & DECLARED == set()
    assert [name for name in DEMO_ONLY if f'"{name}"' not in demo_settings] == []


def prefixed_setting_reads(source: str) -> list[str]:
    """Where ``source`` names a prefixed setting as code does to read it: ``settings.LONG_TIME_TASK_X``, the
    name as a string of its own (``getattr(settings, "LONG_TIME_TASK_X")``, ``os.environ[...]``), or an
    f-string that builds one. Docstrings, comments and messages that mention a setting are not reads."""
    name = re.compile(rf"{PREFIX}\w*")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith(PREFIX):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and name.fullmatch(node.value):
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and name.fullmatch(head.value):
                found.append(f"line {node.lineno}: f{head.value!r}...")
    return found


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ('getattr(settings, f"LONG_TIME_TASK_EVENTS_{name}", default)', True),
        ('getattr(settings, "LONG_TIME_TASK_EVENTS_ENABLED", True)', True),
        ("settings.LONG_TIME_TASK_LEASE_SECONDS", True),
        ('os.environ.get("LONG_TIME_TASK_FILES_DIR")', True),
        ('"""At most one write per ``LONG_TIME_TASK_PROGRESS_INTERVAL`` seconds."""', False),
        ('Error(f"LONG_TIME_TASK_SUBMIT_RATE: {exc}")', False),
        ("conf.PROGRESS_INTERVAL", False),
    ],
)
def test_the_read_detector_tells_reads_from_mentions(source, reads):
    assert bool(prefixed_setting_reads(source)) is reads


def test_only_conf_reads_prefixed_settings():
    package = ROOT / "long_time_task"
    reads = {
        str(path.relative_to(ROOT)): found
        for path in sorted(package.rglob("*.py"))
        if path != package / "conf.py" and "migrations" not in path.parts
        if (found := prefixed_setting_reads(path.read_text()))
    }
    assert reads == {}, "read these through long_time_task.conf.conf"


def test_each_access_reads_the_settings_of_the_moment():
    before = conf.LEASE_SECONDS
    with override_settings(LONG_TIME_TASK_LEASE_SECONDS="2.5"):
        assert conf.LEASE_SECONDS == 2.5
        with override_settings(LONG_TIME_TASK_LEASE_SECONDS=7):
            assert conf.LEASE_SECONDS == 7.0
    assert conf.LEASE_SECONDS == before


@pytest.mark.parametrize("setting", list(Conf.settings()), ids=lambda setting: setting.name)
def test_an_unset_setting_reads_as_its_declared_default(settings, setting):
    if hasattr(settings, setting.setting_name):
        delattr(settings, setting.setting_name)
    assert getattr(conf, setting.name) == setting.convert(setting.default)


def test_the_directories_default_to_var_under_base_dir(settings, tmp_path):
    del settings.LONG_TIME_TASK_FILES_DIR, settings.LONG_TIME_TASK_RESULTS_DIR
    settings.BASE_DIR = tmp_path
    assert (conf.FILES_DIR, conf.RESULTS_DIR) == (tmp_path / "var" / "files", tmp_path / "var" / "results")
    settings.LONG_TIME_TASK_FILES_DIR = "/srv/inputs"
    assert conf.FILES_DIR == Path("/srv/inputs")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SUBMIT_RATE", "10/s", "10/s"),
        ("SUBMIT_RATE", "", None),  # empty: unlimited
        ("SUBMIT_RATE", None, None),
        ("MAX_UNFINISHED_PER_USER", "5", 5),
        ("MAX_UNFINISHED_PER_USER", 0, None),  # 0: unlimited
        ("RETENTION_DAYS", "30", 30.0),
        ("RETENTION_DAYS", "", None),  # keep
        ("RETENTION_DAYS", 0, 0.0),  # zero days is a retention, not "keep"
        ("TRUSTED_PROXY_COUNT", "2", 2),
        ("TRUSTED_PROXY_COUNT", -1, 0),
        ("TRUSTED_PROXY_COUNT", None, 0),
        ("EVENTS_WSGI_MAX_STREAMS", "1.5", 1),
        ("EVENTS_WSGI_MAX_STREAMS", -3, 0),
        ("EVENTS_MAX_PER_USER", "4", 4),
        ("EVENTS_ENABLED", False, False),
        ("PREPARED_STATEMENTS", 0, False),
        ("MAX_BODY_BYTES", "1000", 1000),
        ("PROGRESS_INTERVAL", "0.2", 0.2),
        ("READY_TIMEOUT", "0.5", 0.5),
        ("WORKER_LIVENESS_FILE", "/run/ltt/worker.alive", Path("/run/ltt/worker.alive")),
        ("WORKER_LIVENESS_FILE", "", None),  # the demo's empty variable: no file
        ("BEAT_LIVENESS_FILE", None, None),
    ],
)
def test_a_set_value_is_converted_as_declared(settings, name, value, expected):
    setattr(settings, PREFIX + name, value)
    assert getattr(conf, name) == expected
