"""The config's sections: each key declared once, in the section it belongs to, with its type, default,
--help sentence and range or choices (fastres.config.key), and each section's rules across its keys.

TrainConfig (fastres.config.keys) is their flat union: `cfg.lr`, one flag and one preset key per field.
SECTIONS is in the order of --help and --print-config; sections that share a title share a group there.

  data         DataConfig           where the images are and how they are read
  model        ModelConfig          the network and its BN
  optimisation BatchConfig          epochs and images per step
               OptimizerConfig      the optimizer (fastres.optim.factory.OPTIMIZERS), its rates and keys
               ScheduleConfig       warm-up and decay (fastres.optim.schedule.SCHEDULES), the early stop
  precision and devices  ExecutionConfig
  distributed  DistributedConfig    the gradient all-reduce, the timeouts
  run          RunConfig            the run folder, logs, checkpoints, resume
"""

from fastres.config.key import Section
from fastres.config.sections.batch import BatchConfig
from fastres.config.sections.data import DataConfig
from fastres.config.sections.distributed import DistributedConfig
from fastres.config.sections.execution import DEVICES, PRECISIONS, ExecutionConfig
from fastres.config.sections.model import ModelConfig
from fastres.config.sections.optimizer import OptimizerConfig
from fastres.config.sections.run import RunConfig
from fastres.config.sections.schedule import ScheduleConfig

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "SECTIONS",
    "BatchConfig",
    "DataConfig",
    "DistributedConfig",
    "ExecutionConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunConfig",
    "ScheduleConfig",
]

SECTIONS: tuple[type[Section], ...] = (
    DataConfig,
    ModelConfig,
    BatchConfig,
    OptimizerConfig,
    ScheduleConfig,
    ExecutionConfig,
    DistributedConfig,
    RunConfig,
)
