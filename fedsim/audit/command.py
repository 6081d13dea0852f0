"""``fedsim audit RUN_DIR [--json] [--accountants rdp,prv,pld]`` as one function.

The CLI only parses arguments and calls :func:`audit_command`, which prints and
returns the exit code: 0 clean, 1 violations found, 2 unreadable input.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.text import Text

from fedsim.audit.core import audit_run
from fedsim.audit.errors import AuditInputError
from fedsim.audit.inputs import parse_accountants
from fedsim.audit.render import render_audit
from fedsim.audit.report import EXIT_BAD_INPUT, SCHEMA


def audit_command(
    run_dir: str,
    *,
    as_json: bool,
    accountants: str | None,
    console: Console | None = None,
) -> int:
    """Audit ``run_dir``, print the result, return the exit code.

    Args:
        run_dir: The run directory.
        as_json: Print one strict-JSON document on stdout instead of tables.
        accountants: ``--accountants`` as given ("rdp,prv,pld"), or None for the default.
        console: Where the tables go (default: a rich Console on stdout); errors always
            go to stderr as well.

    Returns:
        0 no violations, 1 violations found, 2 unreadable input (the message says why,
        naming the ledger line where there is one).
    """
    try:
        report = audit_run(run_dir, accountants=parse_accountants(accountants))
    except AuditInputError as exc:
        err = Console(stderr=True)
        # Text, not markup: messages hold brackets (pip install 'fedsim[audit]').
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        if as_json:
            doc = {"schema": SCHEMA, "run_dir": str(run_dir), "exit_code": EXIT_BAD_INPUT}
            doc["error"] = str(exc)
            doc["line"] = exc.line_no
            print(json.dumps(doc, indent=2))
        return EXIT_BAD_INPUT
    if as_json:
        # to_json() is strict already; allow_nan=False makes a regression fail loudly.
        sys.stdout.write(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    else:
        render_audit(report, console or Console())
    return report.exit_code
