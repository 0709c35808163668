"""Image data sets for the convnet: readers, the embedded default, and sharding."""

from gossipnet.data.dataset import Dataset
from gossipnet.data.loaders import DATASET_NAMES, load_dataset
from gossipnet.data.shards import partition, shard

__all__ = ["DATASET_NAMES", "Dataset", "load_dataset", "partition", "shard"]
