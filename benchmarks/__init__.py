"""fedsim's speed harness: `python -m benchmarks.rounds | dp | scale` (see each module).

Results (JSON, with the machine they ran on) go to benchmarks/results/.
"""
