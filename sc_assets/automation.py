"""Declarative automation: ``merged_adata`` refreshes itself after samples change."""

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from sc_assets.jobs import MERGE_RUN_TAGS
from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: Dagster's ``eager()`` without its "no dependency missing" clause: with one partition per
#: sample, a single sample whose run failed would otherwise hold the merge back forever. It
#: still waits while any sample run is queued or running, so a batch of files gives one merge;
#: the merge itself then refuses (naming them) if a sample is missing or failed its checks.
merge_when_samples_settle = (
    AutomationCondition.eager()
    .without(~AutomationCondition.any_deps_missing())
    .with_label("eager, tolerating missing samples")
)


def build_merge_automation_sensor(
    interval_seconds: int, study: StudyKeys = DEFAULT_STUDY
) -> AutomationConditionSensorDefinition:
    """The automation sensor evaluating the study's ``merged_adata``'s condition, running by
    default."""
    return AutomationConditionSensorDefinition(
        study.named("merge_automation_sensor"),
        target=AssetSelection.assets(study.merged_adata),
        default_status=DefaultSensorStatus.RUNNING,
        run_tags=MERGE_RUN_TAGS,
        minimum_interval_seconds=interval_seconds,
        description="Evaluates merged_adata's automation condition (eager, missing allowed).",
    )
