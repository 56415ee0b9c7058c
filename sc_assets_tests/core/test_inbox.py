import os
import time

import pytest

from sc_assets.core.inbox import InboxCursor, content_hash, inbox_changes, scan_inbox

SECOND = 1_000_000_000
NAME = "GSM5320459_Ctrl1_count_matrix.csv.gz"


def write(folder, name, data=b"x", *, age_s=0.0):
    path = folder / name
    path.write_bytes(data)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_scan_lists_valid_files_and_reports_bad_names(tmp_path):
    write(tmp_path, NAME)
    write(tmp_path, "GSM5320460_Ctrl2_count_matrix.csv.gz.part")
    write(tmp_path, "notes.txt")
    write(tmp_path, ".GSM5320461_Ctrl3_count_matrix.csv.gz")  # hidden: reported, not read
    (tmp_path / "GSM5320462_Ctrl4_count_matrix.csv.gz").mkdir()  # an empty folder
    scan = scan_inbox(tmp_path)
    assert list(scan.samples) == ["GSM5320459_Ctrl1"]
    assert scan.samples["GSM5320459_Ctrl1"].size == 1
    assert sorted(scan.ignored) == [
        ".GSM5320461_Ctrl3_count_matrix.csv.gz",
        "GSM5320460_Ctrl2_count_matrix.csv.gz.part",
        "GSM5320462_Ctrl4_count_matrix.csv.gz",
        "notes.txt",
    ]
    assert "expected GSM<digits>" in scan.ignored["notes.txt"].reason
    assert scan.ignored[".GSM5320461_Ctrl3_count_matrix.csv.gz"].reason.startswith("hidden")
    assert "an empty folder" in scan.ignored["GSM5320462_Ctrl4_count_matrix.csv.gz"].reason


def changes(folder, cursor=None, known=(), settle_s=30, **kw):
    return inbox_changes(
        scan_inbox(folder),
        cursor or InboxCursor(),
        known_keys=known,
        now_ns=time.time_ns(),
        settle_ns=settle_s * SECOND,
        **kw,
    )


def test_old_files_are_ready_at_once_and_then_never_again(tmp_path):
    write(tmp_path, NAME, age_s=120)
    first = changes(tmp_path)
    assert [f.partition_key for f in first.ready] == ["GSM5320459_Ctrl1"]
    again = changes(
        tmp_path, InboxCursor.from_json(first.cursor.to_json()), known=["GSM5320459_Ctrl1"]
    )
    assert again.ready == [] and again.settling == []


def test_a_fresh_file_waits_until_its_size_stops_changing(tmp_path):
    path = write(tmp_path, NAME, b"part")
    first = changes(tmp_path)
    assert first.ready == [] and [f.partition_key for f in first.settling] == ["GSM5320459_Ctrl1"]
    with open(path, "ab") as f:
        f.write(b" more")  # still growing at the next look
    second = changes(tmp_path, first.cursor)
    assert second.ready == [] and len(second.settling) == 1
    third = changes(tmp_path, second.cursor)  # unchanged since the last look: ready
    assert [f.partition_key for f in third.ready] == ["GSM5320459_Ctrl1"]
    assert changes(tmp_path, third.cursor).ready == []


def test_a_replaced_file_is_ready_once(tmp_path):
    write(tmp_path, NAME, age_s=120)
    cursor = changes(tmp_path).cursor
    time.sleep(0.01)
    tmp = write(tmp_path, ".incoming.tmp", b"new content", age_s=120)
    os.replace(tmp, tmp_path / NAME)  # replaced atomically, even with an old mtime
    replaced = changes(tmp_path, cursor)
    assert [f.size for f in replaced.ready] == [len(b"new content")]
    assert changes(tmp_path, replaced.cursor).ready == []


def test_bad_names_and_missing_sources_are_reported_once(tmp_path):
    write(tmp_path, "junk.csv.gz")
    first = changes(tmp_path, known=["GSM1_Ctrl1"])
    assert [f.name for f in first.new_ignored] == ["junk.csv.gz"]
    assert first.newly_missing == ["GSM1_Ctrl1"]
    second = changes(tmp_path, first.cursor, known=["GSM1_Ctrl1"])
    assert second.new_ignored == [] and second.newly_missing == []


def test_max_ready_bounds_one_look_and_the_rest_follow(tmp_path):
    for i in range(5):
        write(tmp_path, f"GSM{i + 1}_Ctrl1_count_matrix.csv.gz", age_s=120)
    first = changes(tmp_path, max_ready=2)
    assert len(first.ready) == 2 and len(first.deferred) == 3 and first.settling == []
    second = changes(tmp_path, first.cursor, max_ready=2)
    third = changes(tmp_path, second.cursor, max_ready=2)
    keys = [f.partition_key for c in (first, second, third) for f in c.ready]
    assert sorted(keys) == [f"GSM{i + 1}_Ctrl1" for i in range(5)]


def test_cursor_stays_small(tmp_path):
    for i in range(2000):
        write(tmp_path, f"GSM{i + 1}_Ctrl1_count_matrix.csv.gz", age_s=120)
    result = changes(tmp_path)
    assert len(result.ready) == 2000
    # no per-file state once files are handled (only names sharing the newest ctime tick)
    assert len(result.cursor.to_json()) < 4096


@pytest.mark.parametrize("data", [b"", b"abc" * 100_000])
def test_content_hash_is_sha256(tmp_path, data):
    import hashlib

    assert content_hash(write(tmp_path, "f", data)) == hashlib.sha256(data).hexdigest()
