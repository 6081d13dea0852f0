"""``fedsim audit``: recompute and check a run's privacy accounting from its ledger.

The audit reads ``privacy_ledger.jsonl`` and ``scenario.toml`` alone, never trusts a
stored epsilon, and reports the per-client epsilon distribution, the population
guarantee of each DP level, several accountants side by side, the assumptions in
words, and violations.

Usage::

    from fedsim.audit import audit_run, render_audit
    report = audit_run(Path("runs/quickstart"))
    render_audit(report, rich.console.Console())
    report.violations        # [] when consistent
    report.to_json()         # strict JSON, stable keys (fedsim.audit.report)

    # the CLI: fedsim audit RUN_DIR [--json] [--accountants rdp,prv,pld]
    exit_code = audit_command("runs/quickstart", as_json=False, accountants=None)

Implementation checks of DP-SGD itself (clipping, noise scale) live in
:mod:`fedsim.audit.checks` (imports torch and opacus; not imported here).
"""

from fedsim.audit.command import audit_command
from fedsim.audit.core import audit_run
from fedsim.audit.errors import AuditInputError
from fedsim.audit.findings import Finding
from fedsim.audit.render import render_audit
from fedsim.audit.report import (
    EXIT_BAD_INPUT,
    EXIT_CLEAN,
    EXIT_VIOLATIONS,
    SCHEMA,
    AuditReport,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CLEAN",
    "EXIT_VIOLATIONS",
    "SCHEMA",
    "AuditInputError",
    "AuditReport",
    "Finding",
    "audit_command",
    "audit_run",
    "render_audit",
]
