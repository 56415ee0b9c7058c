"""The ``samples`` partitions: one partition per per-sample file, keyed like ``GSM5320459_Ctrl1``.

Assets, sensors, the schedule and the CLI import it from here so the name has one source of
truth. Keys are added only from file names that pass ``sc_assets.core.parse_sample_name``.
"""

from sc_assets.study import DEFAULT_STUDY

#: The default study's partitions (another study's: ``StudyKeys.partitions``).
SAMPLES_PARTITIONS_NAME = DEFAULT_STUDY.partitions_name

samples_partitions = DEFAULT_STUDY.partitions
