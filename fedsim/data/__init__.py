"""Datasets and client partitions for fedsim.

Data lives once per process in an `ArrayDataset` (tensors); clients get index arrays from
`partition_indices` and materialise batches with `ArrayDataset.batch`.

    bundle = load_dataset("digits", seed=0)
    parts = partition_indices(bundle.train, method="dirichlet", num_clients=10, seed=0, alpha=0.5)
    x, y = bundle.train.batch(parts[0][:32])
"""

from fedsim.data.base import ArrayDataset, DatasetBundle, TextWindowDataset
from fedsim.data.cifar import load_cifar10
from fedsim.data.digits import load_digits
from fedsim.data.errors import DataError
from fedsim.data.femnist import load_femnist
from fedsim.data.flwr_partitioners import FLWR_METHODS, flwr_partition
from fedsim.data.hub import from_hf_dataset, load_hub
from fedsim.data.idx import load_fashion_mnist, load_mnist, read_idx
from fedsim.data.mnist1d import load_mnist1d
from fedsim.data.partition import PARTITION_METHODS, partition_indices
from fedsim.data.registry import DATASETS, clear_dataset_cache, load_dataset
from fedsim.data.shakespeare import load_shakespeare
from fedsim.data.synthetic import load_synthetic

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "DataError",
    "DatasetBundle",
    "FLWR_METHODS",
    "PARTITION_METHODS",
    "TextWindowDataset",
    "clear_dataset_cache",
    "flwr_partition",
    "from_hf_dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_femnist",
    "load_hub",
    "load_mnist",
    "load_mnist1d",
    "load_shakespeare",
    "load_synthetic",
    "partition_indices",
    "read_idx",
]
