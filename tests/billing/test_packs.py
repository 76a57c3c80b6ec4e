import pytest

from apps.billing.packs import CreditPack, credit_packs_parse, currency_parse


def test_packs_parse_in_order():
    assert credit_packs_parse("starter:1000:1000, lab:10000:9000") == (
        CreditPack("starter", 1000, 1000),
        CreditPack("lab", 10000, 9000),
    )


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "starter:1000",
        "starter:1000:1000:1",
        "starter:1000:1000,",
        "starter:0:1000",
        "starter:1000:-5",
        "starter:1e3:1000",
        "Starter:1000:1000",
        "starter:1000:1000,starter:2000:1500",
    ],
)
def test_malformed_packs_are_refused(raw):
    with pytest.raises(ValueError):
        credit_packs_parse(raw)


def test_currency_must_be_an_iso_code():
    assert currency_parse("EUR") == "eur"
    for raw in ("", "euro", "e1r"):
        with pytest.raises(ValueError):
            currency_parse(raw)
