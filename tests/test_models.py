"""The task record: documented fields, JSON round trips, and task ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from colmena_fed.models import Attempt, Result, WorkerInfo


def _undocumented(schema: dict[str, Any]) -> list[str]:
    """Fields without a description in a JSON schema, the records it defines included."""
    missing = []
    for model_name, model in [("Result", schema), *schema.get("$defs", {}).items()]:
        for name, field in model.get("properties", {}).items():
            if not field.get("description"):
                missing.append(f"{model_name}.{name}")
    return missing


def test_every_field_of_the_record_is_documented() -> None:
    schema = Result.model_json_schema()
    assert {"Timestamps", "Attempt", "WorkerInfo", "DataRecord"} <= set(schema["$defs"])
    assert _undocumented(schema) == []


def test_a_finished_record_survives_a_json_round_trip() -> None:
    task = Result(method="simulate", args=(1, "a"), kwargs={"n": 2}, task_info={"round": 3})
    task.attempts.append(Attempt(site="east", dispatched=1.0, ended=2.0, reason="WorkerLost"))
    task.attempts.append(Attempt(site="west", dispatched=2.5, ended=4.0))
    task.worker = WorkerInfo(hostname="node1", pid=42, accelerator="0")
    task.timestamps.compute_started, task.timestamps.compute_ended = 3.0, 3.5
    task.data.result_bytes = 10

    again = Result.model_validate_json(task.model_dump_json())

    assert again == task
    assert isinstance(again.attempts[0], Attempt)
    assert again.attempts[0].reason == "WorkerLost"
    assert again.run_time == 0.5


def test_an_unknown_key_in_a_nested_record_is_refused() -> None:
    record = Result(method="m").model_dump()
    record["timestamps"]["started"] = 1.0
    with pytest.raises(ValidationError, match=r"timestamps\.started"):
        Result.model_validate(record)


def test_task_ids_are_distinct_version_4_uuids() -> None:
    ids = [Result(method="m").task_id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, task_id)
