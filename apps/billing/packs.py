"""Credit packs sold through Stripe Checkout, parsed from `PHONOS_CREDIT_PACKS` at start-up.

Pure Python (no Django) so that `phonos/settings/` can parse and validate the setting.
"""

import re
from dataclasses import dataclass

PACK_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
CURRENCY = re.compile(r"^[a-z]{3}$")
DEFAULT_CREDIT_PACKS = "starter:1000:1000,lab:10000:9000,institute:100000:80000"


@dataclass(frozen=True)
class CreditPack:
    id: str
    credits: int
    price_cents: int


def _positive_int(text: str, what: str, item: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{what} must be a positive whole number in {item!r}")
    return int(text)


def credit_packs_parse(raw: str) -> tuple[CreditPack, ...]:
    """`id:credits:price_in_cents,...`, e.g. `starter:1000:1000,lab:10000:9000`.

    Anything malformed (empty items, extra fields, non-digits, zero, duplicate ids) is refused,
    so a typo stops the deployment instead of selling the wrong thing.
    """
    packs: list[CreditPack] = []
    for item in raw.split(","):
        item = item.strip()
        fields = item.split(":")
        if len(fields) != 3:
            raise ValueError(f"each pack must be id:credits:price_in_cents, got {item!r}")
        pack_id, credits, price = (field.strip() for field in fields)
        if not PACK_ID.match(pack_id):
            raise ValueError(
                f"pack id {pack_id!r} must be 1-32 of a-z, 0-9, '_' or '-' (starting a-z or 0-9)"
            )
        if any(pack.id == pack_id for pack in packs):
            raise ValueError(f"pack id {pack_id!r} is listed twice")
        packs.append(
            CreditPack(
                id=pack_id,
                credits=_positive_int(credits, "credits", item),
                price_cents=_positive_int(price, "price_in_cents", item),
            )
        )
    return tuple(packs)


def currency_parse(raw: str) -> str:
    currency = raw.strip().lower()
    if not CURRENCY.match(currency):
        raise ValueError(f"must be a three-letter ISO currency code such as usd, got {raw!r}")
    return currency
