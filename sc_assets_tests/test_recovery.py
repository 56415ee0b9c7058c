"""Which failed runs the sensor asks for again, and which it leaves alone."""

from __future__ import annotations

import time

from dagster import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import (
    PARTITION_NAME_TAG,
    RUN_FAILURE_REASON_TAG,
    WILL_RETRY_TAG,
)

from sc_assets.recovery import INPUTS_TAG, RECOVERY_TAG, pin_request, recoveries

PIN = "pin_reference_genes"


def failed(instance, job: str, reason: str, **tags: str) -> DagsterRun:
    tags = {RUN_FAILURE_REASON_TAG: reason, WILL_RETRY_TAG: "false", **tags}
    return instance.add_run(DagsterRun(job_name=job, status=DagsterRunStatus.FAILURE, tags=tags))


def test_the_first_pin_is_asked_for_once_then_waited_for(instance):
    assert pin_request(instance, PIN, "s1", "d1") == ("reference_genes:s1", {INPUTS_TAG: "d1"})
    instance.add_run(DagsterRun(job_name=PIN, status=DagsterRunStatus.STARTED))
    assert pin_request(instance, PIN, "s1", "d1") is None  # in progress


def test_a_pin_that_failed_on_the_data_waits_for_other_inputs(instance):
    run = failed(instance, PIN, "STEP_FAILURE", **{INPUTS_TAG: "d1"})
    assert pin_request(instance, PIN, "s1", "d1") is None  # same inputs: it would fail again
    key, tags = pin_request(instance, PIN, "s1", "d2")
    assert key == f"reference_genes:after:{run.run_id}:d2" and tags == {INPUTS_TAG: "d2"}


def test_a_pin_whose_process_died_is_asked_for_again_a_bounded_number_of_times(instance):
    run = failed(instance, PIN, "UNEXPECTED_TERMINATION", **{INPUTS_TAG: "d1"})
    key, tags = pin_request(instance, PIN, "s1", "d1")
    assert key == f"reference_genes:recover:{run.run_id}" and tags[RECOVERY_TAG] == "1"
    run = failed(instance, PIN, "UNEXPECTED_TERMINATION", **{INPUTS_TAG: "d1", RECOVERY_TAG: "1"})
    assert pin_request(instance, PIN, "s1", "d1")[1][RECOVERY_TAG] == "2"
    failed(instance, PIN, "UNEXPECTED_TERMINATION", **{INPUTS_TAG: "d1", RECOVERY_TAG: "2"})
    assert pin_request(instance, PIN, "s1", "d1") is None
    failed(instance, PIN, "UNEXPECTED_TERMINATION", **{WILL_RETRY_TAG: "true"})
    assert pin_request(instance, PIN, "s1", "d1") is None


def test_failed_sample_runs_worth_another_attempt(instance):
    since = float(int(time.time()))
    crashed = failed(instance, "ingest_sample", "RUN_WORKER_RESTART", **{PARTITION_NAME_TAG: "a"})
    failed(instance, "ingest_sample", "STEP_FAILURE", **{PARTITION_NAME_TAG: "b"})  # bad data
    retrying = {PARTITION_NAME_TAG: "c", WILL_RETRY_TAG: "true"}
    failed(instance, "ingest_sample", "UNEXPECTED_TERMINATION", **retrying)
    failed(instance, "ingest_sample", "UNEXPECTED_TERMINATION", **{PARTITION_NAME_TAG: "d"})
    instance.add_run(  # d was run again since
        DagsterRun(
            job_name="ingest_sample",
            status=DagsterRunStatus.SUCCESS,
            tags={PARTITION_NAME_TAG: "d"},
        )
    )
    exhausted = {PARTITION_NAME_TAG: "e", RECOVERY_TAG: "2"}
    failed(instance, "ingest_sample", "UNEXPECTED_TERMINATION", **exhausted)
    failed(instance, PIN, "UNEXPECTED_TERMINATION")  # another job

    found, newest, seen = recoveries(instance, ["ingest_sample"], since)
    assert [(r.run.run_id, r.partition_key, r.attempt) for r in found] == [(crashed.run_id, "a", 1)]
    assert found[0].reason == "its process ended unexpectedly (run worker restart)"
    assert found[0].tags == {RECOVERY_TAG: "1"}
    # The last second's runs are remembered by id (storage keeps whole seconds), whichever
    # second the runs above fell in.
    assert newest >= since and len(seen) >= 1
    assert recoveries(instance, ["ingest_sample"], newest, seen)[0] == []  # looked at once
