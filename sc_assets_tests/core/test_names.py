import pytest

from sc_assets.core import (
    SampleName,
    SampleNameError,
    is_sample_file_name,
    parse_partition_key,
    parse_sample_name,
)


def test_parses_the_geo_name():
    sample = parse_sample_name("GSM5320459_Ctrl1_count_matrix.csv.gz")
    assert sample == SampleName(sample_id="GSM5320459", condition="Ctrl", donor=1)
    assert sample.sample == "Ctrl1"
    assert sample.partition_key == "GSM5320459_Ctrl1"
    assert sample.file_name == "GSM5320459_Ctrl1_count_matrix.csv.gz"


@pytest.mark.parametrize(
    ("name", "condition", "donor"),
    [
        ("GSM5320463_Pre1_count_matrix.csv.gz", "Pre", 1),
        ("GSM5320470_Post4_count_matrix.csv.gz", "Post", 4),
        ("GSM1_Treated12_count_matrix.csv.gz", "Treated", 12),
    ],
)
def test_parses_other_conditions_and_donors(name, condition, donor):
    sample = parse_sample_name(name)
    assert (sample.condition, sample.donor) == (condition, donor)


def test_accepts_a_path_and_uses_its_name():
    sample = parse_sample_name("/data/inbox/GSM5320459_Ctrl1_count_matrix.csv.gz")
    assert sample.partition_key == "GSM5320459_Ctrl1"


@pytest.mark.parametrize(
    "name",
    [
        "GSM5320459_Ctrl1_count_matrix.csv",  # not gzipped
        "GSM5320459_Ctrl1_count_matrix.csv.gz.part",  # partial download
        ".GSM5320459_Ctrl1_count_matrix.csv.gz",  # hidden
        "gsm5320459_Ctrl1_count_matrix.csv.gz",  # lower-case accession
        "GSM5320459_Ctrl_count_matrix.csv.gz",  # no donor
        "GSM5320459_1_count_matrix.csv.gz",  # no condition
        "GSM5320459_Ctrl01_count_matrix.csv.gz",  # leading zero: ambiguous donor
        "GSM5320459_Ctrl1_counts.csv.gz",
        "GSM5320459_Ctrl 1_count_matrix.csv.gz",
        "GSM5320459_Ctrl1_count_matrix.csv.gz\n",
        "GSM5320459_..1_count_matrix.csv.gz",
        "GSM5320459_Ctrl1_count_matrix.csv.gz/..",
        "GSM5320459_Ctrl1_Ctrl1_count_matrix.csv.gz",
        "GSM5320459_Ctrl1\x00_count_matrix.csv.gz",
        "GSM5320459_Ctrlé1_count_matrix.csv.gz",
        "",
    ],
)
def test_rejects_anything_else_with_a_clear_message(name):
    assert not is_sample_file_name(name)
    with pytest.raises(SampleNameError, match="expected GSM<digits>_<Condition><donor>"):
        parse_sample_name(name)


def test_partition_keys_round_trip_and_reject_paths():
    assert parse_partition_key("GSM5320459_Ctrl1").file_name == (
        "GSM5320459_Ctrl1_count_matrix.csv.gz"
    )
    for bad in ["../GSM5320459_Ctrl1", "GSM5320459_Ctrl1/x", "GSM5320459_Ctrl1\n", "x"]:
        with pytest.raises(SampleNameError, match="not a sample partition key"):
            parse_partition_key(bad)
