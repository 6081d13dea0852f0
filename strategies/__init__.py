"""Server side of fedsim: Flower strategies by name, and our own additions."""

from fedsim.strategies.factory import STRATEGIES, build_strategy

__all__ = ["STRATEGIES", "build_strategy"]
