"""Training: typed config, trainer loop, checkpoints, run directories."""
from .config import TrainConfig, default_config, parse_overrides, read_config_file
from .run import REPORT_KEYS, Run, load_run, summary_table, train
from .trainer import Trainer

__all__ = ["TrainConfig", "default_config", "parse_overrides", "read_config_file", "Trainer", "Run", "train", "load_run",
           "summary_table", "REPORT_KEYS"]
