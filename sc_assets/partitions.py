"""The ``samples`` partitions: one partition per per-sample file, keyed like ``GSM5320459_Ctrl1``.

Assets, sensors, the schedule and the CLI import it from here so the name has one source of
truth. Keys are added only from file names that pass ``sc_assets.core.parse_sample_name``.
"""

from dagster import DynamicPartitionsDefinition

SAMPLES_PARTITIONS_NAME = "samples"

samples_partitions = DynamicPartitionsDefinition(name=SAMPLES_PARTITIONS_NAME)
