"""Every options dataclass in one place, for users and scripts: `from vitmae.config import FinetuneConfig`.

Each is defined with the code that uses it (the model's architecture in model/config.py, the engine's
options in train/config.py, each task's in its module); the fields declare their help, choices and ranges
(options.opt), and flags, `--config FILE.yaml` and a run's saved `config.yaml` are all views of them.
"""
from .errors import ConfigError
from .model.config import PRESETS, ModelConfig, model_config, to_2tuple
from .options import Options, opt, read_options_file, save_config
from .tasks.bench import BenchConfig
from .tasks.options import EncoderOptions, InferenceOptions, LabeledDataOptions, MAEOptions, SceneOptions
from .tasks.detect import DetectConfig
from .tasks.embed import EmbedConfig
from .tasks.evaluate import EvaluateConfig
from .tasks.finetune import FinetuneConfig
from .tasks.knn import KnnConfig
from .tasks.linprobe import LinprobeConfig
from .tasks.make_dataset import MakeDatasetOptions
from .tasks.predict import PredictConfig
from .tasks.pretrain import PretrainConfig
from .tasks.segment import SegmentConfig
from .train.config import RuntimeOptions, TrainConfig

__all__ = ["BenchConfig", "ConfigError", "DetectConfig", "EmbedConfig", "EncoderOptions", "EvaluateConfig",
           "FinetuneConfig", "InferenceOptions", "KnnConfig", "LabeledDataOptions", "LinprobeConfig", "MAEOptions",
           "MakeDatasetOptions", "ModelConfig", "Options", "PRESETS", "PredictConfig", "PretrainConfig",
           "RuntimeOptions", "SceneOptions", "SegmentConfig", "TrainConfig", "model_config", "opt",
           "read_options_file", "save_config", "to_2tuple"]
