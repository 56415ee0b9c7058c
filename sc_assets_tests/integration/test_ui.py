"""The Dagster UI in a real browser, used the way a newcomer would use it.

Over generated demo data and a temporary DAGSTER_HOME: open the asset graph, pin the reference
genes, materialize one ``sample_adata`` partition with the partition picker, read its checks
per partition and its QC plots, materialize the other sample, build ``merged_adata`` and read
its checks. Every step leaves a screenshot in ``test-output/ui/`` (``<step>-FAILED.png`` when
it fails), which is also where the README's screenshots come from.

The browser is Debian's Chromium (``/usr/bin/chromium``, installed by ``make test``) driven by
Playwright for Python; Playwright's own browser download is never used. Without a Chromium
the test skips and says so.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from sc_assets_tests.conftest import copy_samples
from sc_assets_tests.integration.conftest import PROJECT, DagsterDev

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package (dev extra) is not installed"
)
expect, Locator, Page = sync_api.expect, sync_api.Locator, sync_api.Page

pytestmark = pytest.mark.integration

SCREENSHOTS = PROJECT / "test-output" / "ui"
KEYS = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]
PICKED, OTHER = KEYS

#: Chromium as root in a container: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: UI interactions: the React app renders in well under a second, unless the CPU is shared.
UI_TIMEOUT_MS = 30_000
#: One run, queued then executed in its own process: ~10 s alone on 2 cores, more when busy.
RUN_TIMEOUT_MS = 240_000


def find_chromium() -> str | None:
    """Debian's Chromium (what ``make test`` installs), else a ``chromium`` on the PATH."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A headless Chromium page, 1400 x 900 (the README screenshots' size)."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium to drive: /usr/bin/chromium is missing and no chromium is on the "
            "PATH (`make test` installs Debian's package as root: apt-get install -y chromium)"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(UI_TIMEOUT_MS)
            context.set_default_navigation_timeout(2 * UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions wait as long as actions
            yield context.new_page()
        finally:
            browser.close()


class Steps:
    """Named test steps: a screenshot after each, ``-FAILED`` when it raised; timings kept."""

    def __init__(self, page: Page, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)  # no stale screenshot from an earlier run
        folder.mkdir(parents=True)
        self.page, self.folder = page, folder
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.page.screenshot(path=self.folder / f"{name}-FAILED.png", animations="disabled")
            raise
        self.seconds[name] = round(time.monotonic() - start, 1)
        # Transitions (dialogs fading in) are fast-forwarded, so a screenshot shows the end state.
        self.page.screenshot(path=self.folder / f"{name}.png", animations="disabled")


def test_newcomer_materializes_a_sample_reads_its_checks_and_builds_the_merge(
    browser_page: Page, idle_dagster_dev: DagsterDev, demo_files
):
    page, dev = browser_page, idle_dagster_dev
    # Files landed and were registered as partitions; the sensor, which would do this itself,
    # is idle here so that the UI launches every run.
    copy_samples(demo_files, dev.data_dir, KEYS)
    with DagsterInstance.from_config(str(dev.home)) as instance:
        instance.add_dynamic_partitions("samples", KEYS)
    # The one-time "Join the Dagster community" dialog is answered once per instance.
    dev.graphql("mutation { setNuxSeen }")
    step = Steps(page, SCREENSHOTS)

    with step("01-asset-graph"):
        page.goto(dev.url)
        nav_link(page, "Lineage").click()
        for name in ("raw_count_matrix", "reference_genes", "sample_adata", "merged_adata"):
            expect(graph_node(page, name)).to_be_visible()
        # The nodes' status, once loaded: the two samples, nothing materialized yet.
        expect(page.get_by_text("2 partitions", exact=True)).to_have_count(2)
        expect(page.get_by_text("Never materialized", exact=True)).to_have_count(2)
        expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0)

    with step("02-reference-genes-run"):
        graph_node(page, "reference_genes").click()
        expect(page.get_by_text("The reference gene list (one symbol per line")).to_be_visible()
        launch_and_open_run(page, dev, page.get_by_role("button", name="Materialize selected"))
        wait_for_run_success(page, dev)

    with step("03-partition-picker"):
        nav_link(page, "Lineage").click()
        graph_node(page, "sample_adata").click()
        expect(page.get_by_text("One sample as AnnData (cells x genes)")).to_be_visible()
        page.get_by_role("button", name="Materialize selected").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize sample_adata")).to_be_visible()
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_placeholder("Filter partitions").fill(PICKED)
        page.get_by_role("menuitem").filter(has_text=PICKED).click()
        page.keyboard.press("Escape")  # closes the picker's list, not the dialog
        expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()

    with step("04-sample-run"):
        launch_and_open_run(page, dev, dialog.get_by_role("button", name="Launch 1 run"))
        wait_for_run_success(page, dev)
        expect(page.get_by_text(f"partition: {PICKED}").first).to_be_visible()

    with step("05-sample-checks"):
        nav_link(page, "Catalog").click()
        catalog_link(page, "sample_adata").click()
        page.get_by_role("tab", name="Checks").click()
        checks = page.get_by_text("Succeeded", exact=True)
        expect(checks).to_have_count(6)
        # The selected check's results per partition: one passed, the other not run yet.
        page.get_by_role("tab", name="Partitions").last.click()
        expect(page.get_by_text("Passed (1)", exact=True)).to_be_visible()
        expect(page.get_by_text("Missing (1)", exact=True)).to_be_visible()
        visible_text(page, PICKED).click()
        expect(page.get_by_text(re.compile(r"^\d+ cells, within \[100, 100,000\]"))).to_be_visible()
        expect(page.get_by_text("Passed", exact=True).first).to_be_visible()

    with step("06-qc-plots"):
        page.get_by_role("tab", name="Partitions").first.click()
        visible_text(page, PICKED).click()
        expect(page.get_by_text("median_total_counts", exact=True)).to_be_visible()
        page.get_by_text("[Show Markdown]").click()
        plot = page.get_by_role("dialog").get_by_role("img", name="QC plots")
        expect(plot).to_be_visible()
        # The PNG data URI decoded: an image that failed to load has no natural width.
        assert plot.evaluate("img => img.complete && img.naturalWidth") > 0

    with step("07-other-sample-run"):
        page.get_by_role("dialog").get_by_role("button", name="Close").click()
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Missing", exact=True).click()
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        launch_and_open_run(page, dev, dialog.get_by_role("button", name="Launch 1 run"))
        wait_for_run_success(page, dev)
        expect(page.get_by_text(f"partition: {OTHER}").first).to_be_visible()

    with step("08-merge-run"):
        nav_link(page, "Lineage").click()
        graph_node(page, "merged_adata").click()
        expect(page.get_by_text("All samples concatenated")).to_be_visible()
        launch_and_open_run(page, dev, page.get_by_role("button", name="Materialize selected"))
        wait_for_run_success(page, dev)

    with step("09-merged-checks"):
        nav_link(page, "Catalog").click()
        catalog_link(page, "merged_adata").click()
        page.get_by_role("tab", name="Checks").click()
        expect(page.get_by_text("Succeeded", exact=True)).to_have_count(6)
        # cell_count (selected first) explains itself: a table of cells per sample.
        expect(page.get_by_text(re.compile(r"^\d+ cells = the sum over 2 samples"))).to_be_visible()
        for label in ("Ctrl1", "Ctrl2"):
            expect(page.get_by_role("cell", name=label, exact=True)).to_be_visible()

    with step("10-asset-graph-done"):
        nav_link(page, "Lineage").click()
        # Six checks on each asset: the samples' and the merge's.
        expect(page.get_by_text("6 / 6 Passed", exact=True)).to_have_count(2)
        expect(page.get_by_text("Materialized", exact=True)).to_have_count(2)  # reference, merge
        expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0)

    print(f"UI steps (s): {step.seconds}")
    with DagsterInstance.from_config(str(dev.home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("sample_adata")) == set(KEYS)
        merged = instance.get_latest_materialization_event(AssetKey("merged_adata"))
        assert merged.asset_materialization.metadata["n_samples"].value == 2
    assert (dev.storage_dir / "merged_adata.h5ad").exists()


def nav_link(page: Page, label: str) -> Locator:
    """A link of the main navigation; its name also holds its icon's, e.g. "lineage Lineage"."""
    return page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"\b{label}$"))


def catalog_link(page: Page, asset: str) -> Locator:
    """An asset's link in the catalog (its name is written twice, once hidden for measuring)."""
    return page.locator(f'a[href="/assets/{asset}"]').filter(visible=True).first


def graph_node(page: Page, asset: str) -> Locator:
    """An asset's node in the lineage graph (its name carries a tooltip of the full name)."""
    return page.locator(f'[data-tooltip="{asset}"]').filter(visible=True).first


def visible_text(page: Page, text: str) -> Locator:
    """Exactly ``text``, visible: long names also exist in hidden copies used for measuring."""
    return page.get_by_text(text, exact=True).filter(visible=True).first


def launch_and_open_run(page: Page, dev: DagsterDev, button: Locator) -> None:
    """Click ``button`` and follow the "Launched run ... View" toast to the new run's page."""
    toasts = page.get_by_role("region", name=re.compile("Notifications"))
    view = toasts.get_by_role("link", name="View", exact=True)
    expect(view).to_have_count(0)  # an earlier launch's toast gone: the one to follow is ours
    button.click()
    expect(view).to_be_visible()
    # Toasts fade after a few seconds, so read where "View" leads instead of racing a click.
    page.goto(dev.url + view.get_attribute("href"))


def wait_for_run_success(page: Page, dev: DagsterDev) -> None:
    """Wait on the run page until its status reads Success; fail early on Failure."""
    success = page.get_by_text("Success", exact=True).first
    failure = page.get_by_text("Failure", exact=True).first
    expect(success.or_(failure).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    if failure.is_visible():
        pytest.fail(f"run failed: {page.url}\n{dev.tail()}")
