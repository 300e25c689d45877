"""Every options dataclass in one place, for users and scripts: `from vitmae.config import FinetuneOptions`.

Each is defined with the code that uses it (the model's architecture in model/config.py, the engine's
options in train/config.py, each task's in its module); the fields declare their help, choices and ranges
(options.opt), and flags, `--config FILE.yaml` and a run's saved `config.yaml` are all views of them.
"""
from .errors import ConfigError
from .model.config import PRESETS, ModelConfig, model_config, to_2tuple
from .options import Options, opt, read_options_file, save_config
from .tasks.bench import BenchOptions
from .tasks.options import EncoderOptions, InferenceOptions, LabeledDataOptions, MAEOptions, SceneOptions
from .tasks.detect import DetectOptions
from .tasks.embed import EmbedOptions
from .tasks.evaluate import EvaluateOptions
from .tasks.finetune import FinetuneOptions
from .tasks.knn import KnnOptions
from .tasks.linprobe import LinprobeOptions
from .tasks.make_dataset import MakeDatasetOptions
from .tasks.plan import PlanOptions
from .tasks.predict import PredictOptions
from .tasks.pretrain import PretrainOptions
from .tasks.segment import SegmentOptions
from .train.config import RuntimeOptions, TrainOptions

# The names these had before every options class was called *Options (ModelConfig, the architecture record,
# keeps its name): scripts written for them still run.
(BenchConfig, DetectConfig, EmbedConfig, EvaluateConfig, FinetuneConfig, KnnConfig, LinprobeConfig, PredictConfig,
 PretrainConfig, SegmentConfig, TrainConfig) = (BenchOptions, DetectOptions, EmbedOptions, EvaluateOptions,
                                                FinetuneOptions, KnnOptions, LinprobeOptions, PredictOptions,
                                                PretrainOptions, SegmentOptions, TrainOptions)

__all__ = ["BenchOptions", "ConfigError", "DetectOptions", "EmbedOptions", "EncoderOptions", "EvaluateOptions",
           "FinetuneOptions", "InferenceOptions", "KnnOptions", "LabeledDataOptions", "LinprobeOptions", "MAEOptions",
           "MakeDatasetOptions", "ModelConfig", "Options", "PRESETS", "PlanOptions", "PredictOptions",
           "PretrainOptions", "RuntimeOptions", "SceneOptions", "SegmentOptions", "TrainOptions", "model_config", "opt",
           "read_options_file", "save_config", "to_2tuple"]
