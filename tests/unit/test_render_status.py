"""Status bookkeeping (k2_operator.status) and the roll-ups of children into conditions."""

from __future__ import annotations

from typing import Any

import pytest

from k2_operator import status as st
from k2_operator.reconcile import (
    application_state,
    compaction_status,
    feed_conditions,
    pipeline_conditions,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def test_conditions_are_ready_progressing_degraded_with_generation() -> None:
    conds = st.merge_conditions([], st.progressing("RollingOut", "0/1"), generation=3, timestamp=T0)
    assert [c["type"] for c in conds] == ["Ready", "Progressing", "Degraded"]
    assert [c["status"] for c in conds] == ["False", "True", "False"]
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T0 for c in conds)
    assert by_type(conds)["Ready"]["reason"] == "RollingOut"


def test_last_transition_time_moves_only_when_the_status_changes() -> None:
    first = st.merge_conditions([], st.progressing("RollingOut", "0/1"), generation=1, timestamp=T0)
    # same statuses, new message and reason: the times stay
    second = st.merge_conditions(
        first,
        st.progressing("RollingOut", "0/2", ready_reason="IngestorUnavailable"),
        generation=2,
        timestamp=T1,
    )
    assert {c["lastTransitionTime"] for c in second} == {T0}
    assert by_type(second)["Ready"]["reason"] == "IngestorUnavailable"
    assert by_type(second)["Progressing"]["message"] == "0/2"
    assert {c["observedGeneration"] for c in second} == {2}
    # Ready and Progressing flip, Degraded stays False
    third = st.merge_conditions(second, st.ready("IngestorAvailable"), generation=2, timestamp=T1)
    t = by_type(third)
    assert t["Ready"]["lastTransitionTime"] == T1 and t["Ready"]["status"] == "True"
    assert t["Progressing"]["lastTransitionTime"] == T1 and t["Progressing"]["status"] == "False"
    assert t["Degraded"]["lastTransitionTime"] == T0


def test_other_condition_types_are_kept_in_a_stable_order() -> None:
    existing = [
        {
            "type": "TopicReady",
            "status": "True",
            "reason": "Created",
            "message": "",
            "lastTransitionTime": T0,
        }
    ]
    conds = st.merge_conditions(existing, st.ready("Ok"), generation=1, timestamp=T1)
    assert [c["type"] for c in conds] == ["Ready", "Progressing", "Degraded", "TopicReady"]


def test_degraded_retrying_keeps_progressing() -> None:
    t = by_type(
        st.merge_conditions(
            [], st.degraded("CatalogUnavailable", "down", retrying=True), generation=1
        )
    )
    assert (t["Ready"]["status"], t["Progressing"]["status"], t["Degraded"]["status"]) == (
        "False",
        "True",
        "True",
    )
    assert t["Progressing"]["reason"] == "Retrying"
    t = by_type(st.merge_conditions([], st.degraded("IncompatibleChange", "no"), generation=1))
    assert (t["Progressing"]["status"], t["Progressing"]["reason"]) == (
        "False",
        "IncompatibleChange",
    )


def test_paused_touches_only_progressing() -> None:
    before = st.merge_conditions([], st.ready("TableReady"), generation=1, timestamp=T0)
    after = by_type(st.merge_conditions(before, st.paused(), generation=None, timestamp=T1))
    assert after["Ready"]["status"] == "True" and after["Ready"]["lastTransitionTime"] == T0
    assert after["Progressing"]["reason"] == "Paused" and after["Progressing"]["status"] == "False"


@pytest.mark.parametrize("reason", ["not camel", "Bad-Dash", "", "9Lives"])
def test_reasons_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        st.Condition("Ready", True, reason)


def test_status_update_is_none_when_nothing_changes() -> None:
    patch = st.status_update(
        {}, st.ready("Ok", "fine"), generation=4, fields={"replicas": 1}, timestamp=T0
    )
    assert patch is not None and patch["observedGeneration"] == 4 and patch["replicas"] == 1
    current = {**patch}
    assert (
        st.status_update(
            current, st.ready("Ok", "fine"), generation=4, fields={"replicas": 1}, timestamp=T1
        )
        is None
    )
    # observedGeneration alone
    again = st.status_update(current, st.ready("Ok", "fine"), generation=5, timestamp=T1)
    assert again is not None and again["observedGeneration"] == 5
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {T0}
    # paused: observedGeneration is left alone
    paused = st.status_update(current, st.paused(), generation=None, timestamp=T1)
    assert paused is not None and "observedGeneration" not in paused


# ------------------------------------------------------------------ roll-ups


def deployment(generation: int = 1, **status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


def test_feed_conditions_follow_the_deployment() -> None:
    def ready_of(conds: list[st.Condition]) -> tuple[bool | None, str]:
        c = next(c for c in conds if c.type == "Ready")
        return c.status, c.reason

    assert ready_of(feed_conditions(deployment(), 1)) == (False, "IngestorUnavailable")
    ok = deployment(observedGeneration=1, availableReplicas=1, updatedReplicas=1, readyReplicas=1)
    assert ready_of(feed_conditions(ok, 1)) == (True, "IngestorAvailable")
    stale = deployment(generation=2, observedGeneration=1, availableReplicas=1, updatedReplicas=1)
    assert ready_of(feed_conditions(stale, 1)) == (False, "IngestorUnavailable")
    assert ready_of(feed_conditions(deployment(), 0)) == (True, "ScaledToZero")
    stuck = deployment(
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]
    )
    assert ready_of(feed_conditions(stuck, 1)) == (False, "RolloutStuck")
    quota = deployment(
        conditions=[{"type": "ReplicaFailure", "status": "True", "message": "quota"}]
    )
    degraded = {c.type: c for c in feed_conditions(quota, 1)}["Degraded"]
    assert (degraded.status, degraded.reason, degraded.message) == (True, "ReplicaFailure", "quota")


def table(name: str, *conds: st.Condition) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"conditions": st.merge_conditions([], conds, generation=1)},
    }


def app(state: str | None, error: str = "") -> dict[str, Any]:
    if state is None:
        return {"metadata": {"name": "x"}}
    return {"status": {"applicationState": {"state": state, "errorMessage": error}}}


def test_pipeline_conditions_roll_up_tables_then_applications() -> None:
    ready_tables = [table(f"t{i}", *st.ready("TableReady")) for i in range(5)]
    apps = {"bronze": app("RUNNING"), "silver": app("RUNNING"), "gold": app("RUNNING")}
    c = {x.type: x for x in pipeline_conditions(ready_tables, apps)}
    assert (c["Ready"].status, c["Ready"].reason) == (True, "PipelineRunning")
    assert c["Ready"].message == "5/5 tables ready, 3/3 applications running"

    waiting = {**apps, "gold": app(None)}
    c = {x.type: x for x in pipeline_conditions(ready_tables, waiting)}
    assert (c["Ready"].reason, c["Progressing"].reason) == (
        "ApplicationsNotRunning",
        "WaitingForApplications",
    )

    pending = [*ready_tables[:4], table("t4", *st.progressing("Creating"))]
    c = {x.type: x for x in pipeline_conditions(pending, apps)}
    assert (c["Ready"].reason, c["Progressing"].status) == ("TablesNotReady", True)

    broken = [
        *ready_tables[:4],
        table("t4", *st.degraded("CatalogUnavailable", "down", retrying=True)),
    ]
    c = {x.type: x for x in pipeline_conditions(broken, apps)}
    assert (c["Degraded"].status, c["Degraded"].reason) == (True, "TableDegraded")
    assert "t4 (CatalogUnavailable)" in c["Degraded"].message

    failed = {**apps, "silver": app("FAILED", "OOMKilled")}
    c = {x.type: x for x in pipeline_conditions(ready_tables, failed)}
    assert (c["Degraded"].reason, c["Degraded"].message) == (
        "ApplicationFailed",
        "silver: FAILED (OOMKilled)",
    )


def test_application_state() -> None:
    assert application_state(None) == ""
    assert application_state(app(None)) == ""
    assert application_state(app("SUBMITTED")) == "SUBMITTED"


def test_compaction_status_reports_the_cron_jobs_controller_view() -> None:
    assert compaction_status(None) is None  # disabled: the status field is removed
    fresh = {"metadata": {"name": "crypto-compact-gold"}, "spec": {"schedule": "*/10 * * * *"}}
    assert compaction_status(fresh) == {
        "cronJob": "crypto-compact-gold",
        "schedule": "*/10 * * * *",
        "active": 0,
    }
    ran = fresh | {
        "status": {
            "active": [{"name": "crypto-compact-gold-29400000"}],
            "lastScheduleTime": "2026-11-25T21:10:00Z",
            "lastSuccessfulTime": "2026-11-25T21:00:41Z",
        }
    }
    assert compaction_status(ran) == {
        "cronJob": "crypto-compact-gold",
        "schedule": "*/10 * * * *",
        "active": 1,
        "lastScheduleTime": "2026-11-25T21:10:00Z",
        "lastSuccessfulTime": "2026-11-25T21:00:41Z",
    }
