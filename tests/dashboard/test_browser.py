"""The dashboard in a real browser: the whole journey of a new user, and tenant isolation."""

import gemmi
import pytest
import requests

from apps.accounts.services import api_key_create
from apps.jobs.catalog import submission_clean
from apps.jobs.services import job_submit
from apps.webhooks.services import webhook_create
from tests.dashboard.conftest import PASSWORD, screenshot, sign_up

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SEQUENCE = "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAY"
FASTA = f">sp|P0TEST| a test protein\n{SEQUENCE[:20]}\n{SEQUENCE[20:]}\n"


@pytest.fixture
def loopback_webhooks(settings):
    settings.PHONOS_WEBHOOK_ALLOW_HTTP = True
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def test_sign_up_submit_watch_and_download_a_fold(
    new_page, live_server, start_worker, s3_storage, tiny_esmfold, loopback_webhooks, tmp_path
):
    worker = start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    page = new_page()
    sign_up(page, "dana")
    assert page.get_by_test_id("balance").inner_text() == "100"
    screenshot(page, "01-overview")

    page.click("text=API keys")
    page.fill("input[name=name]", "laptop")
    page.fill("input[name=password]", PASSWORD)
    page.click("text=Create key")
    raw_key = page.locator("#raw-key").inner_text()
    assert raw_key.startswith("pk_") and len(raw_key) > 20
    assert page.locator("td.mono").first.inner_text().endswith("…")
    # The key shown once works on the API (and its use shows on the usage page).
    account = requests.get(
        f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {raw_key}"}
    )
    assert account.status_code == 200 and account.json()["account"]["username"] == "dana"
    screenshot(page, "02-keys")

    page.click("text=Webhooks")
    page.fill("input[name=url]", "http://127.0.0.1:9/phonos-hook")
    page.click("text=Add webhook")
    assert page.locator("#secret").inner_text()
    page.click("text=http://127.0.0.1:9/phonos-hook")
    page.click("text=Send test event")
    assert page.locator("td", has_text="webhook.test").count() == 1
    screenshot(page, "03-webhook")

    page.click("text=New job")
    page.select_option("#id_model", "esmfold")
    page.fill("input[name=name]", "dash fold")
    page.fill("textarea[name=sequence]", FASTA)
    page.fill("input[name=esmfold__num_recycles]", "1")
    page.click("button[value=validate]")
    preview = page.get_by_test_id("cost-preview").inner_text()
    assert "10 credits" in preview and f"{len(SEQUENCE)} residues" in preview
    screenshot(page, "04-submit")
    page.click("#submit-job")
    page.wait_for_url("**/dashboard/jobs/*/")
    screenshot(page, "05-job-running")

    # The page follows the job's event stream and reloads itself once the job has ended.
    page.wait_for_selector("[data-testid=job-status]:text('completed')", timeout=240_000)
    page.wait_for_selector("#molstar[data-loaded=true]", timeout=120_000)
    page.wait_for_selector("#pae[data-loaded=true]")
    assert page.locator("#molstar canvas").count() >= 1
    atoms = int(page.locator("#molstar").get_attribute("data-atoms"))
    assert atoms >= len(SEQUENCE) * 4  # N, CA, C, O at least, per residue
    assert page.locator("#pae").get_attribute("data-residues") == str(len(SEQUENCE))
    assert page.locator("#pae").get_attribute("data-chain-boundaries") == ""  # one chain
    page.select_option("#molstar-colour", "chain")
    page.wait_for_selector("#molstar[data-colour=chain]")
    screenshot(page, "06-job-completed")

    with page.expect_download() as download_info:
        page.get_by_test_id("download-pdb").click()
    path = tmp_path / "structure.pdb"
    download_info.value.save_as(path)
    structure = gemmi.read_structure(str(path))
    residues = list(structure[0][0])
    assert gemmi.one_letter_code([residue.name for residue in residues]).upper() == SEQUENCE
    assert "ready." in worker.log()

    page.click("text=Jobs")
    assert page.locator("td", has_text="dash fold").count() == 1
    screenshot(page, "07-jobs")
    page.click("text=Usage")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert "/v1/account" in page.locator("#usage-data").text_content()
    screenshot(page, "08-usage")
    page.click("text=Billing")
    assert page.get_by_test_id("balance").inner_text() == "90"
    screenshot(page, "09-billing")


def test_another_account_sees_none_of_it(new_page, loopback_webhooks, make_user):
    owner = make_user("olga")
    job = job_submit(
        account=owner.account,
        api_key=None,
        submission=submission_clean({"model": "esmfold", "sequence": SEQUENCE, "name": "secret"}),
    )
    key = api_key_create(account=owner.account, name="olga-key").api_key
    webhook = webhook_create(account=owner.account, url="http://127.0.0.1:9/olga").webhook

    page = new_page()
    sign_up(page, "mallory")
    for path in (
        f"/dashboard/jobs/{job.id}/",
        f"/dashboard/jobs/{job.id}/live/",
        f"/dashboard/jobs/{job.id}/confidence.json",
        f"/dashboard/jobs/{job.id}/structure?format=pdb",
        f"/dashboard/jobs/{job.id}/archive.zip",
        f"/dashboard/webhooks/{webhook.id}/",
    ):
        assert page.goto(path).status == 404, path
    page.goto("/dashboard/jobs/")
    assert "secret" not in page.locator("main").inner_text()
    page.goto("/dashboard/keys/")
    assert key.prefix not in page.content()
    page.goto("/dashboard/webhooks/")
    assert "olga" not in page.locator("main").inner_text()
    screenshot(page, "10-isolation")
