"""Training: typed config, trainer loop, checkpoints, run directories."""
from .config import TrainConfig, parse_overrides, read_config_file
from .defaults import default_config, default_keys
from .run import REPORT_KEYS, Run, load_run, summary_table, train
from .stages import Stage, read_stages, train_stages
from .trainer import Trainer

__all__ = ["TrainConfig", "default_config", "default_keys", "parse_overrides", "read_config_file", "Trainer", "Run", "train", "load_run",
           "summary_table", "REPORT_KEYS", "Stage", "read_stages", "train_stages"]
