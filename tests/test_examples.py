"""The seed's example task types do real work (called directly here; the e2e test runs them on a worker)."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from long_time_task.conf import conf
from long_time_task.context import TaskCancelled, TaskContext, activate, deactivate
from long_time_task.exceptions import TaskError
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.registry import InvalidParams, LongTimeTaskRegister
from long_time_task.tasks_definitions import (
    analyze_data,
    generate_report,
    load_dataset,
    process_file,
    resolve_input,
)


def test_data_analysis_computes_real_statistics():
    result = analyze_data(1, {"dataset_id": 5, "size": 500})
    values = load_dataset(5, 500)
    stats = result["stats"]
    assert stats["count"] == 500
    assert stats["mean"] == round(statistics.fmean(values), 6)
    assert stats["median"] == round(statistics.median(values), 6)
    assert stats["stdev"] == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert "histogram" not in stats


def test_data_analysis_full_adds_histogram_and_trend_and_is_deterministic():
    first = analyze_data(1, {"dataset_id": 9, "analysis_type": "full", "size": 1000})
    assert first == analyze_data(2, {"dataset_id": 9, "analysis_type": "full", "size": 1000})
    assert sum(b["count"] for b in first["stats"]["histogram"]) == 1000
    assert first["stats"]["trend"]["slope"] > 0  # the generated series trends upwards
    assert analyze_data(1, {"dataset_id": 10, "size": 1000}) != analyze_data(1, {"dataset_id": 9, "size": 1000})


def test_data_analysis_reads_a_stored_dataset():
    (conf.FILES_DIR / "datasets").mkdir()
    (conf.FILES_DIR / "datasets" / "3.csv").write_text("1\n2\n3\n4\n")
    stats = analyze_data(1, {"dataset_id": 3})["stats"]
    assert (stats["count"], stats["mean"], stats["min"], stats["max"]) == (4, 2.5, 1.0, 4.0)


def test_file_processing_converts_csv_to_json_and_json_to_csv():
    (conf.FILES_DIR / "in.csv").write_text("a,b\n1,x\n2,y\n")
    result = process_file(7, {"file_path": "in.csv", "output_format": "json"})
    assert json.loads((conf.RESULTS_DIR / result["output_file"]).read_text()) == [
        {"a": "1", "b": "x"},
        {"a": "2", "b": "y"},
    ]
    assert (result["rows"], result["columns"]) == (2, ["a", "b"])
    (conf.FILES_DIR / "in.json").write_text(json.dumps([{"k": 1}, {"k": 2, "extra": True}]))
    out = process_file(8, {"file_path": "in.json", "output_format": "csv"})
    assert (conf.RESULTS_DIR / out["output_file"]).read_text().splitlines() == ["k,extra", "1,", "2,True"]


NOT_A_FILE = (
    "Invalid params at params.file_path: no readable file of that name in the files directory "
    "(give a .csv or .json file's name relative to it)"
)


def test_file_processing_names_are_relative_to_the_files_directory():
    (conf.FILES_DIR / "sub").mkdir()
    (conf.FILES_DIR / "sub" / "in.csv").write_text("a\n1\n")
    config = LongTimeTaskRegister.require("file_processing")
    for name in ("sub/in.csv", "sub/../sub/in.csv", "./sub/in.csv"):
        config.validate_params({"file_path": name})
        assert process_file(1, {"file_path": name})["rows"] == 1


@pytest.mark.parametrize(
    "name",
    [
        "../secret.csv",  # outside, and it exists
        "sub/../../secret.csv",
        "link.csv",  # a symlink leading out
        "{files}/in.csv",  # absolute, even inside the files directory
        "{files}/../secret.csv",
        "/etc/passwd.csv",
        "nope.csv",  # missing
        "adir.csv",  # a directory
        "loop.csv",  # a symlink to itself
        pytest.param("a\x00b.csv", id="nul"),
        pytest.param("x" * 300 + ".csv", id="too-long-for-the-file-system"),
        pytest.param("y" * 1100 + ".csv", id="longer-than-any-name-taken"),
    ],
)
def test_file_processing_gives_one_answer_for_anything_not_a_readable_file_in_the_directory(name, tmp_path):
    files = conf.FILES_DIR
    (tmp_path / "secret.csv").write_text("a\n1\n")
    (files / "in.csv").write_text("a\n1\n")
    (files / "adir.csv").mkdir()
    (files / "link.csv").symlink_to(tmp_path / "secret.csv")
    (files / "loop.csv").symlink_to(files / "loop.csv")
    name = name.replace("{files}", str(files))
    with pytest.raises(InvalidParams) as refused:
        resolve_input(name)
    message = str(refused.value)
    assert message == NOT_A_FILE and refused.value.field == "params.file_path"
    assert str(tmp_path) not in message and "/" not in message.split(":", 1)[1]  # no server path echoed
    # The handler checks again (rows can be written by anyone): the same message, for the owner to see.
    with pytest.raises(TaskError) as failed:
        process_file(1, {"file_path": name})
    assert (failed.value.message, failed.value.code) == (NOT_A_FILE, "invalid_params")


def test_file_processing_suffix_rule_depends_on_the_name_alone():
    (conf.FILES_DIR / "notes.txt").write_text("x")
    (conf.FILES_DIR / "notes.csv").symlink_to(conf.FILES_DIR / "notes.txt")
    config = LongTimeTaskRegister.require("file_processing")
    for name in ("notes.txt", "missing.txt", "../outside.txt", "/etc/passwd"):  # existing or not: one answer
        with pytest.raises(InvalidParams, match=r"only \.csv and \.json files can be converted$"):
            config.validate_params({"file_path": name})
    with pytest.raises(InvalidParams) as refused:  # a .csv name for a file of another kind
        config.validate_params({"file_path": "notes.csv"})
    assert str(refused.value) == NOT_A_FILE


def test_file_processing_refuses_a_file_removed_after_the_submit():
    (conf.FILES_DIR / "in.csv").write_text("a\n1\n")
    LongTimeTaskRegister.require("file_processing").validate_params({"file_path": "in.csv"})
    (conf.FILES_DIR / "in.csv").unlink()
    with pytest.raises(TaskError, match="no readable file of that name"):
        process_file(1, {"file_path": "in.csv"})


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["html", "csv", "json"])
def test_report_generation_writes_a_real_report_of_the_task_table(fmt):
    LongTimeTask.objects.create(task_type="data_analysis", state=TaskState.FINISHED)
    LongTimeTask.objects.create(task_type="data_analysis", state=TaskState.FAILED, error_code="handler_error")
    result = generate_report(11, {"report_type": "detailed", "format": fmt})
    assert result["report_path"] == f"reports/11.{fmt}" and result["task_types"] == 1
    data = (conf.RESULTS_DIR / result["report_path"]).read_bytes()
    assert len(data) == result["bytes"]
    text = data.decode()
    assert "data_analysis" in text
    if fmt == "json":
        report = json.loads(text)
        assert report["types"][0]["states"] == {"FAILED": 1, "FINISHED": 1}
        assert report["types"][0]["failure_rate"] == 0.5
        assert report["recent_failures"][0]["error_code"] == "handler_error"


class CancelledWhileWriting(TaskContext):
    """A context whose task is cancelled once the handler reports progress past 50% (the writing half)."""

    def progress(self, percent: float | None = None, message: str = "", **kwargs: Any) -> None:
        if percent is not None and percent > 50:
            raise TaskCancelled("cancelled while writing")


def test_a_conversion_cancelled_while_writing_leaves_no_file_behind():
    (conf.FILES_DIR / "in.csv").write_text("a,b\n1,x\n2,y\n")
    token = activate(CancelledWhileWriting(7, 1))
    try:
        with pytest.raises(TaskCancelled):
            process_file(7, {"file_path": "in.csv", "output_format": "csv"})
    finally:
        deactivate(token)
    assert list((conf.RESULTS_DIR / "files").iterdir()) == []  # neither the output nor its temporary file
