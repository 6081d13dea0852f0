"""Seeds derived from (scenario seed, purpose, round, client), or from OS entropy.

Everything random in a run is drawn from a seed derived here, so results do not
depend on which worker ran which client, in what order, or how many clients
shared a message.

With ``dp.secure_rng = true`` every draw a DP guarantee depends on (the noise, and
the sampling: DP-SGD batch masks, Poisson client cohorts, the adaptive-clipping
count noise) comes from :func:`secure_torch_generator` / :func:`secure_numpy_rng`
instead: a generator seeded with 63 fresh bits from ``os.urandom``, so the seed in
``scenario.toml`` reveals neither the noise nor who was sampled. These are
torch's Philox/Mersenne and numpy's PCG64 generators with an unpredictable seed,
not a CSPRNG stream (torchcsprng has no build for this Python/torch).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

_MASK = (1 << 63) - 1


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for one purpose, e.g. `derive_seed(7, "train", round, client)`.

    Hashing (rather than `seed + client`) keeps streams of neighbouring clients and
    rounds independent.
    """
    text = ":".join([str(seed), purpose, *(str(int(k)) for k in keys)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `derive_seed(seed, purpose, *keys)`."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, purpose, *keys))
    return gen


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A numpy Generator seeded with `derive_seed(seed, purpose, *keys)`."""
    return np.random.default_rng(derive_seed(seed, purpose, *keys))


def os_entropy_seed() -> int:
    """63 bits from the OS entropy pool (``os.urandom``): a seed no file records."""
    return int.from_bytes(os.urandom(8), "little") & _MASK


def secure_torch_generator(device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded from OS entropy (see the module docstring)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(os_entropy_seed())
    return gen


def secure_numpy_rng() -> np.random.Generator:
    """A numpy Generator seeded with 128 bits of OS entropy."""
    return np.random.default_rng(int.from_bytes(os.urandom(16), "little"))


def dp_torch_generator(secure: bool, seed: int, purpose: str, *keys: int) -> torch.Generator:
    """:func:`secure_torch_generator` if ``secure`` (dp.secure_rng), else seeded."""
    return secure_torch_generator() if secure else torch_generator(seed, purpose, *keys)


def dp_numpy_rng(secure: bool, seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """:func:`secure_numpy_rng` if ``secure`` (dp.secure_rng), else seeded."""
    return secure_numpy_rng() if secure else numpy_rng(seed, purpose, *keys)
