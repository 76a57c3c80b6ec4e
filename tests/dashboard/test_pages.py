"""Fast checks of the dashboard through Django's test client: login lockout, CSRF, sign-up
credits after email verification, password reset mail, and tenant scoping of the
session-authenticated downloads. The hostile cases are in tests/hostile/test_signup_login.py."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.accounts.services import api_key_create
from apps.billing.models import LedgerEntry
from apps.jobs.catalog import submission_clean
from apps.jobs.services import job_submit
from tests.conftest import GLYCINE_PDB
from tests.dashboard.conftest import PASSWORD, verification_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def olga(make_user):
    return make_user("olga")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_sign_up_grants_the_trial_credits_once_the_email_is_verified(
    settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.PHONOS_SIGNUP_CREDITS = 250
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/dashboard/signup/",
            {
                "username": "newbie",
                "email": "newbie@example.com",
                "password1": PASSWORD,
                "password2": PASSWORD,
            },
        )
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert re.search(rb'data-testid="balance">0<', page.content)
    assert b'data-testid="verify-email"' in page.content
    assert client.get(verification_path("newbie@example.com")).status_code == 302
    page = client.get("/dashboard/")
    assert re.search(rb'data-testid="balance">250<', page.content)
    assert b'data-testid="verify-email"' not in page.content
    entry = LedgerEntry.objects.get(account__username="newbie")
    assert entry.amount == 250


def test_repeated_failed_logins_are_refused_even_with_the_right_password(olga, make_user, settings):
    settings.PHONOS_LOGIN_MAX_FAILURES = settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        response = client.post("/dashboard/login/", {"username": "olga", "password": "wrong"})
        assert b"Please enter a correct username and password" in response.content
    # The failure that reaches the limit is already answered with the lockout.
    response = client.post("/dashboard/login/", {"username": "olga", "password": "wrong"})
    assert response.status_code == 429
    response = client.post("/dashboard/login/", {"username": "olga", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed log-in attempts" in response.content
    # Another username from the same address is not locked out (its limit is per address).
    other = make_user("pia")
    response = client.post("/dashboard/login/", {"username": other.username, "password": PASSWORD})
    assert response.status_code == 302


def test_a_successful_login_clears_the_failures(olga, settings):
    settings.PHONOS_LOGIN_MAX_FAILURES = settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    client.post("/dashboard/login/", {"username": "olga", "password": "wrong"})
    assert (
        client.post("/dashboard/login/", {"username": "olga", "password": PASSWORD}).status_code
        == 302
    )
    client.post("/dashboard/logout/")
    client.post("/dashboard/login/", {"username": "olga", "password": "wrong"})
    assert (
        client.post("/dashboard/login/", {"username": "olga", "password": PASSWORD}).status_code
        == 302
    )


def test_posts_without_a_csrf_token_are_refused(olga):
    client = Client(enforce_csrf_checks=True)
    assert (
        client.post("/dashboard/login/", {"username": "olga", "password": PASSWORD}).status_code
        == 403
    )
    client.force_login(olga)
    assert client.post("/dashboard/keys/", {"name": "x"}).status_code == 403
    assert not olga.account.api_keys.exists()


def test_pages_need_a_session(olga):
    response = Client().get("/dashboard/jobs/")
    assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/")
    assert Client().get(
        "/dashboard/jobs/00000000-0000-0000-0000-000000000000/structure"
    ).status_code in {401, 403}


def test_password_reset_mails_a_working_link(olga, mailoutbox):
    mailoutbox.clear()  # the sign-up's verification mail
    client = Client()
    assert (
        client.post("/dashboard/password-reset/", {"email": "olga@example.com"}).status_code == 302
    )
    assert len(mailoutbox) == 1
    link = re.search(r"http://testserver(/dashboard/password-reset/\S+/)", mailoutbox[0].body)[1]
    form_page = client.get(link, follow=True)
    assert b"Choose a new password" in form_page.content
    new_password = "another long passphrase 7"
    response = client.post(
        form_page.request["PATH_INFO"],
        {"new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    login = Client().post("/dashboard/login/", {"username": "olga", "password": new_password})
    assert login.status_code == 302


def test_other_accounts_objects_answer_404(olga, make_user):
    job = job_submit(
        account=olga.account,
        api_key=None,
        submission=submission_clean({"model": "esmfold", "sequence": "MKTAYIAK"}),
    )
    key = api_key_create(account=olga.account).api_key
    mallory = signed_in(make_user("mallory"))
    for path in (
        f"/dashboard/jobs/{job.id}/",
        f"/dashboard/jobs/{job.id}/confidence.json",
        f"/dashboard/jobs/{job.id}/archive.zip",
    ):
        assert mallory.get(path).status_code == 404, path
    assert mallory.post(f"/dashboard/jobs/{job.id}/cancel/").status_code == 404
    assert mallory.post(f"/dashboard/keys/{key.id}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.is_active
    assert signed_in(olga).get(f"/dashboard/jobs/{job.id}/").status_code == 200


def test_submit_shows_validation_errors_inline_and_charges_nothing(olga):
    client = signed_in(olga)
    response = client.post(
        "/dashboard/jobs/new/",
        {"model": "esmfold", "sequence": ">header only\nMKT1!", "action": "submit"},
    )
    assert response.status_code == 200
    assert b"sequence" in response.content and b'class="flash error"' in response.content
    olga.account.refresh_from_db()
    assert olga.account.credit_balance == 100 and not olga.account.jobs.exists()


def test_billing_lists_packs_and_disables_buying_without_stripe(olga, settings):
    settings.STRIPE_SECRET_KEY = ""
    response = signed_in(olga).get("/dashboard/billing/")
    assert response.status_code == 200
    assert b"Trial credits" in response.content
    assert response.content.count(b"disabled>Buy</button>") >= 1
    checkout = signed_in(olga).post("/dashboard/billing/checkout/", {"pack": "starter"})
    assert checkout.status_code == 302 and checkout["Location"] == "/dashboard/billing/"


def test_fasta_file_upload_is_read_without_its_header(olga):
    fasta = SimpleUploadedFile("p.fasta", b">sp|X| test\nMKTAY\nIAKQR\n")
    response = signed_in(olga).post(
        "/dashboard/jobs/new/",
        {"model": "esmfold", "sequence_file": fasta, "action": "validate"},
    )
    assert b"costs <strong>10 credits</strong> (10 residues" in response.content


def test_docking_takes_an_uploaded_receptor_and_a_smiles(olga):
    receptor = SimpleUploadedFile("receptor.pdb", GLYCINE_PDB.encode())
    response = signed_in(olga).post(
        "/dashboard/jobs/new/",
        {
            "model": "diffdock",
            "protein_pdb_file": receptor,
            "ligand_smiles": "CCO",
            "diffdock__inference_steps": "20",
            "diffdock__samples_per_complex": "5",
            "action": "submit",
        },
    )
    assert response.status_code == 302
    job = olga.account.jobs.get()
    assert job.model == "diffdock" and job.params["ligand_smiles"] == "CCO"
    assert job.params["samples_per_complex"] == 5 and "ATOM" in job.params["protein_pdb"]


def test_vina_box_coordinates_are_decimal_fields(olga):
    receptor = SimpleUploadedFile("receptor.pdb", GLYCINE_PDB.encode())
    response = signed_in(olga).post(
        "/dashboard/jobs/new/",
        {
            "model": "vina",
            "protein_pdb_file": receptor,
            "ligand_smiles": "c1ccc2cc(O)ccc2c1",
            **{f"vina__center_{axis}": "1.5" for axis in "xyz"},
            **{f"vina__size_{axis}": "22.5" for axis in "xyz"},
            "action": "submit",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = olga.account.jobs.get()
    assert (job.params["center_x"], job.params["size_z"]) == (1.5, 22.5)


def test_docking_can_use_a_finished_fold_of_ones_own(olga):
    from apps.jobs.models import Job

    fold = Job.objects.create(
        account=olga.account,
        model="esmfold",
        sequence="G",
        status=Job.Status.COMPLETED,
        output_file="fold.pdb",
        cost_credits=10,
    )
    client = signed_in(olga)
    form = client.get("/dashboard/jobs/new/")
    assert str(fold.id).encode() in form.content
    response = client.post(
        "/dashboard/jobs/new/",
        {
            "model": "diffdock",
            "protein_job": str(fold.id),
            "ligand_smiles": "CCO",
            "action": "submit",
        },
    )
    assert response.status_code == 302
    docking = olga.account.jobs.get(model="diffdock")
    # Sent as the API sends it: the worker reads the fold's structure when it runs.
    assert docking.params["protein_job_id"] == str(fold.id)
    assert "protein_pdb" not in docking.params
