"""Training runs: data, models, the runner, its observers, run folders, configs and recipes.

Uses ``curvature``, ``lr``, ``schedules`` and ``range_test``; nothing in the library imports it
except the CLI and the demo. Modules:

* :mod:`.data` -- datasets, file formats, downloads, subsets, augmentation, the batch stream;
* :mod:`.models` -- MLP, LeNet-5, CIFAR ResNets (``build_model``);
* :mod:`.train_config` -- ``TrainConfig`` (validated at construction) and ``TrainResult``;
* :mod:`.config` -- dataclasses <-> command-line flags, schedule specs (``NAME:k=v``);
* :mod:`.run` -- run folders (``Run``), the one-writer lock (``RunLock``), metadata;
* :mod:`.observers` -- the estimator adapter, curvature probe, evaluation, callback observers;
* :mod:`.setup` -- what a run is built from: device, seeding, optimizer, probe batch, observers;
* :mod:`.runner` -- ``train``: the resumable loop;
* :mod:`.recipes` -- ``range_test_from_config``: the LR range test set up like a run.
"""

from .data import CorruptDatasetError, Dataset, DatasetNotFoundError, load_dataset
from .models import build_model
from .recipes import RangeTestSetup, range_test_from_config
from .run import Run, RunLock, RunLockedError, find_runs
from .runner import ConfigMismatchError, train
from .train_config import TrainConfig, TrainResult

__all__ = [
    "train",
    "TrainConfig",
    "TrainResult",
    "ConfigMismatchError",
    "Run",
    "RunLock",
    "RunLockedError",
    "find_runs",
    "RangeTestSetup",
    "range_test_from_config",
    "load_dataset",
    "Dataset",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "build_model",
]
