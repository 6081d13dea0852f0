"""``fedsim report``: figures and a self-contained HTML page from run directories.

- :mod:`fedsim.report.html`: reads run directories, writes ``report.html`` (figures
  embedded as data URIs, inline CSS, no network) and the PNGs; ``report_command`` is
  the CLI entry.
- :mod:`fedsim.report.figures`: the figures, one or several runs overlaid.
"""

from __future__ import annotations

from fedsim.report.figures import RunData, client_epsilons, participation_counts
from fedsim.report.html import ReportError, load_run, report_command, write_report

__all__ = [
    "ReportError",
    "RunData",
    "client_epsilons",
    "load_run",
    "participation_counts",
    "report_command",
    "write_report",
]
