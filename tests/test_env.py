"""The strict environment readers of phonos/env.py."""

import pytest

from phonos.env import ImproperlyConfiguredEnv, database_from_url


def test_a_database_url_keeps_its_connection_options():
    database = database_from_url(
        "postgres://phonos:s%40cret@db.internal:6432/phonos?sslmode=require&connect_timeout=5"
    )
    assert database["NAME"] == "phonos"
    assert (database["USER"], database["PASSWORD"]) == ("phonos", "s@cret")
    assert (database["HOST"], database["PORT"]) == ("db.internal", "6432")
    assert database["OPTIONS"] == {
        "sslmode": "require",
        "connect_timeout": "5",
        "server_side_binding": True,
    }
    assert database["ENGINE"] == "phonos.postgresql"
    assert database_from_url("postgres://u@h/phonos")["OPTIONS"] == {"server_side_binding": True}


def test_server_side_binding_can_be_turned_off_for_an_old_pgbouncer():
    options = database_from_url("postgres://u@h/phonos?server_side_binding=false")["OPTIONS"]
    assert options == {"server_side_binding": False}
    with pytest.raises(ImproperlyConfiguredEnv):
        database_from_url("postgres://u@h/phonos?server_side_binding=maybe")


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u@h/",
        "mysql://u@h/phonos",
        "postgres://u@h/phonos?sslmode",
        "postgres://u@h/x?&",
    ],
)
def test_a_malformed_database_url_is_refused(url):
    with pytest.raises(ImproperlyConfiguredEnv):
        database_from_url(url)
