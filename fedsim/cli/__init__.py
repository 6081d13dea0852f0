"""The `fedsim` command: its subcommands (commands.py), the live progress display
(progress.py) and the partition report (partition_report.py).

It imports Flower, Ray and torch only for the commands that run something (run,
resume); check, audit, results and report answer without them.
"""

from fedsim.cli.commands import main

__all__ = ["main"]
