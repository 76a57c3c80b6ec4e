"""Server paths out of text a tenant reads (job errors, `diffdock.log`).

Runner errors and DiffDock's output quote the worker's files (its temporary directory, the
DiffDock checkout, the virtualenv's site-packages): useful to an operator, who has the worker's
log, and a map of the server to anyone else. Each absolute path of two or more parts keeps only
its last part, which is usually what explains the error (`…/inference.py`).
"""

import re

# Not after a word, a dot, a colon or a slash: `1/2`, `C/C=C`, `https://host/x` stay as they are.
# A first part of three characters or more (`/tmp`, `/home`) spares SMILES bonds such as `(/C/C)`.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/[\w.@+-]{3,}(?:/[\w.@+-]+)+/?")


def server_paths_scrub(text: str) -> str:
    return _ABSOLUTE_PATH.sub(
        lambda match: "…/" + match.group().rstrip("/").rsplit("/", 1)[1], text
    )
