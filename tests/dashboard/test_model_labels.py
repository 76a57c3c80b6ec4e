"""The dashboard labels a job's input from the registry: a docking job's is a ligand."""

import pytest
from django.test import Client

from apps.jobs.catalog import submission_clean
from apps.jobs.services import job_submit
from tests.conftest import GLYCINE_PDB

pytestmark = pytest.mark.django_db


def test_a_docking_jobs_input_is_labelled_a_ligand(make_user):
    user = make_user("lena")
    client = Client()
    client.force_login(user)
    fold = job_submit(
        account=user.account,
        api_key=None,
        submission=submission_clean({"model": "esmfold", "sequence": "MKTAYIAK"}),
    )
    dock = job_submit(
        account=user.account,
        api_key=None,
        submission=submission_clean(
            {"model": "vina", "sequence": "CCO", "params": {"protein_pdb": GLYCINE_PDB}}
        ),
    )
    assert "<h3>Sequence <small" in client.get(f"/dashboard/jobs/{fold.id}/").text
    assert "<h3>Ligand (SMILES) <small" in client.get(f"/dashboard/jobs/{dock.id}/").text
