from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from long_time_task.registry import InvalidParams, LongTimeTaskRegister, RegistryError, TaskConfig, UnknownTaskType


def handler(task_id: int, params: dict[str, Any]) -> None:
    return None


def other_handler(task_id: int, params: dict[str, Any]) -> None:
    return None


@pytest.fixture(autouse=True)
def isolated_registry():
    with LongTimeTaskRegister.isolated():
        yield


def test_register_yields_frozen_config_with_every_field():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    LongTimeTaskRegister.register(
        task_type="t_all",
        description="all fields",
        timeout=100,
        soft_timeout=90,
        max_retries=5,
        retry_delay=7,
        retry_backoff=False,
        retry_backoff_max=70,
        queue="heavy",
        priority=9,
        param_schema=schema,
        retryable_exceptions=(KeyError,),
    )(handler)
    config = LongTimeTaskRegister.get_task("t_all")
    assert config is not None
    assert (config.name, config.handler, config.description) == ("t_all", handler, "all fields")
    assert (config.timeout, config.soft_timeout, config.max_retries, config.retry_delay) == (100, 90, 5, 7)
    assert (config.retry_backoff, config.retry_backoff_max, config.queue, config.priority) == (False, 70, "heavy", 9)
    assert config.param_schema == schema and config.retryable_exceptions == (KeyError,)
    schema_properties: dict = schema["properties"]  # type: ignore[assignment]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 1  # type: ignore[misc]
    schema_properties["n"]["type"] = "string"  # the caller's dict can't change the registered type
    config.validate_params({"n": 1})


def test_decorator_returns_the_function_unchanged():
    assert LongTimeTaskRegister.register(task_type="t_same")(handler) is handler


def test_duplicate_task_type_fails_naming_the_first_registration():
    LongTimeTaskRegister.register(task_type="t_dup")(handler)
    with pytest.raises(RegistryError, match=r"'t_dup' is already registered by tests\.test_registry\.handler"):
        LongTimeTaskRegister.register(task_type="t_dup")(other_handler)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 60, "soft_timeout": 60}, r"soft_timeout \(60s\) must be less than timeout \(60s\)"),
        ({"timeout": 60, "soft_timeout": 90}, "soft_timeout"),
        ({"priority": 0}, "priority must be between 1 and 10"),
        ({"priority": 11}, "priority must be between 1 and 10"),
        ({"priority": True}, "priority must be an integer"),
        ({"timeout": -1}, "timeout must be a positive integer"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"retryable_exceptions": (ValueError, "x")}, "retryable_exceptions"),
        ({"param_schema": {"type": "no-such-type"}}, "param_schema is not a valid JSON Schema"),
        ({"param_schema": {"required": "dataset_id"}}, "param_schema is not a valid JSON Schema"),
    ],
)
def test_invalid_declarations_fail_at_decoration_time(kwargs, message):
    with pytest.raises(RegistryError, match=message) as info:
        LongTimeTaskRegister.register(task_type="t_bad", **kwargs)(handler)
    assert "'t_bad'" in str(info.value)
    assert LongTimeTaskRegister.get_task("t_bad") is None


def test_lambda_and_closure_handlers_are_refused():
    with pytest.raises(RegistryError, match="module-level function"):
        LongTimeTaskRegister.register(task_type="t_lambda")(lambda task_id, params: None)

    def inner(task_id: int, params: dict[str, Any]) -> None:
        return None

    with pytest.raises(RegistryError, match="module-level function"):
        LongTimeTaskRegister.register(task_type="t_closure")(inner)


SCHEMA = {
    "type": "object",
    "required": ["dataset_id"],
    "properties": {
        "dataset_id": {"type": "integer"},
        "mode": {"type": "string", "enum": ["basic", "full"]},
        "options": {"type": "object", "properties": {"depth": {"type": "integer", "minimum": 1}}},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({}, "params", "'dataset_id' is a required property"),
        ({"dataset_id": "7"}, "params.dataset_id", "is not of type 'integer'"),
        ({"dataset_id": 7, "mode": "deep"}, "params.mode", "is not one of ['basic', 'full']"),
        ({"dataset_id": 7, "extra": 1}, "params", "'extra' was unexpected"),
        ({"dataset_id": 7, "options": {"depth": 0}}, "params.options.depth", "less than the minimum of 1"),
    ],
)
def test_param_schema_is_real_json_schema_and_names_the_field(params, field, fragment):
    LongTimeTaskRegister.register(task_type="t_schema", param_schema=SCHEMA)(handler)
    with pytest.raises(InvalidParams) as info:
        LongTimeTaskRegister.validate_params("t_schema", params)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"Invalid params at {field}:")


def test_valid_params_pass_and_non_objects_are_refused():
    LongTimeTaskRegister.register(task_type="t_ok", param_schema=SCHEMA)(handler)
    assert LongTimeTaskRegister.validate_params("t_ok", {"dataset_id": 1, "mode": "full"}) is True
    with pytest.raises(InvalidParams, match="params must be a JSON object"):
        LongTimeTaskRegister.validate_params("t_ok", [1, 2])


def test_unknown_task_type_is_reported():
    with pytest.raises(UnknownTaskType, match="Unknown task type: nope"):
        LongTimeTaskRegister.validate_params("nope", {})
    assert LongTimeTaskRegister.get_task(123) is None  # type: ignore[arg-type]


def test_retryable_exceptions_decide_retries_and_soft_limit_never_retries():
    config = TaskConfig(name="t_retry", handler=handler, retryable_exceptions=(Exception,))
    assert config.is_retryable(ConnectionError())
    assert not config.is_retryable(SoftTimeLimitExceeded())
    default = TaskConfig(name="t_default", handler=handler)
    assert default.is_retryable(TimeoutError()) and default.is_retryable(ConnectionError())
    assert not default.is_retryable(ValueError())


def test_retry_countdown_backs_off_exponentially_with_jitter_up_to_the_cap():
    config = TaskConfig(name="t_backoff", handler=handler, retry_delay=10, retry_backoff_max=60)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        samples = [config.retry_countdown(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples), attempt
        assert max(samples) - min(samples) > ceiling / 10  # jittered, not constant


def test_retry_countdown_without_backoff_is_the_fixed_delay():
    config = TaskConfig(name="t_fixed", handler=handler, retry_delay=7, retry_backoff=False)
    assert [config.retry_countdown(n) for n in (1, 2, 5)] == [7.0, 7.0, 7.0]


def test_example_and_project_task_types_are_discovered():
    # long_time_task's own examples and the test app's types, found through tasks_definitions.py.
    names = set(LongTimeTaskRegister.get_all_tasks())
    assert {"data_analysis", "file_processing", "report_generation"} <= names
    assert {"test_echo", "test_flaky"} <= names
