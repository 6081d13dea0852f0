"""Empirical privacy audits: what one training run reveals, beside what the accountant claims.

Two methods, both needing a single training run with canaries inserted:

- :mod:`fedsim.empirical.one_run` (Steinke, Nasr & Jagielski 2023): example level. m
  canary examples, each included with probability 1/2; guesses from per-canary scores
  give a statistical LOWER BOUND on eps at a stated confidence. If it exceeds the
  accountant's eps, the implementation or the accounting is wrong.
- :mod:`fedsim.empirical.one_shot` (Andrew et al. 2023): user level. Canary clients send
  random unit directions; cosines with the final model delta give an eps ESTIMATE
  (a Gaussian fit, not a bound).

A run directory may hold ``empirical_audit.json``, which ``fedsim report`` shows beside
the accountant's eps: the dict from :func:`best_lower_bound` (``"method": "one_run"``,
``"epsilon_lower_bound"``, ``"confidence"``, ...) or, for the one-shot method,
``{"method": "one_shot", "epsilon_estimate": eps, "delta": delta, ...}``.
"""

from __future__ import annotations

from fedsim.empirical.one_run import (
    AuditInputError,
    best_lower_bound,
    canary_assignment,
    epsilon_lower_bound,
    p_value,
    score_guesses,
)
from fedsim.empirical.one_shot import (
    EstimateInputError,
    canary_directions,
    cosines,
    epsilon_estimate,
    epsilon_two_gaussians,
)

__all__ = [
    "AuditInputError",
    "EstimateInputError",
    "best_lower_bound",
    "canary_assignment",
    "canary_directions",
    "cosines",
    "epsilon_estimate",
    "epsilon_lower_bound",
    "epsilon_two_gaussians",
    "p_value",
    "score_guesses",
]
