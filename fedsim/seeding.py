"""Seeds derived from (scenario seed, purpose, round, client).

Everything random in a run is drawn from a seed derived here, so results do not
depend on which worker ran which client, in what order, or how many clients
shared a message.
"""

from __future__ import annotations

import hashlib

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
