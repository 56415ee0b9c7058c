import base64

from sc_assets.core.report import CheckCell, Report, ReportRow, write_report

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def make_report(*, bad: bool) -> Report:
    good = ReportRow(
        "GSM1_Ctrl1",
        {"cell_count": CheckCell("pass", "9,413 cells"), "mt_genes": CheckCell("warn", "0")},
        plot_png=PNG,
    )
    failing = ReportRow(
        "GSM2_Ctrl2",
        {
            "cell_count": CheckCell("pass", "8,891 cells"),
            "gene_set": CheckCell("fail", "25 missing, 0 extra", "25 genes missing (first: A)"),
        },
    )
    broken = ReportRow("GSM3_Ctrl3", {}, note="latest run failed: line 4: '1.5' is not whole")
    samples = [good, failing, broken] if bad else [good]
    merged = ReportRow(
        "merged_adata",
        {} if bad else {"cell_count": CheckCell("pass", "9,413")},
        note="latest run failed: blocked" if bad else "",
    )
    return Report("t", ["cell_count", "gene_set", "mt_genes"], samples, ["cell_count"], merged)


def test_ok_when_no_error_check_fails_warnings_allowed():
    assert make_report(bad=False).ok
    assert make_report(bad=False).failures == []


def test_names_every_failing_sample_and_check(tmp_path):
    report = make_report(bad=True)
    assert not report.ok
    assert report.failures == [
        "GSM2_Ctrl2: gene_set — 25 genes missing (first: A)",
        "GSM3_Ctrl3: latest run failed: line 4: '1.5' is not whole",
        "merged_adata: latest run failed: blocked",
    ]
    written = write_report(report, tmp_path)
    assert not written.ok
    markdown = written.markdown_path.read_text()
    assert "| GSM2_Ctrl2 | ✅ pass (8,891 cells) | ❌ fail (25 missing, 0 extra) | – none |" in (
        markdown
    )
    assert "![QC plots of GSM1_Ctrl1](plots/GSM1_Ctrl1.png)" in markdown
    assert (tmp_path / "plots" / "GSM1_Ctrl1.png").read_bytes() == PNG


def test_html_is_self_contained(tmp_path):
    written = write_report(make_report(bad=True), tmp_path)
    page = written.html_path.read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert "<link" not in page and "src='http" not in page
    assert "GSM2_Ctrl2: gene_set — 25 genes missing (first: A)" in page
    assert "class='fail'" in page
