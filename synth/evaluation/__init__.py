"""``synth eval``: the MetaUAS one-prompt protocol on MVTec AD, VisA and folder layouts.

Readers in :mod:`~synth.evaluation.datasets`, prompt rules and the evaluation loop in
:mod:`~synth.evaluation.protocol`, the table/CSV/JSON/overlays in
:mod:`~synth.evaluation.report`, the model interface in :mod:`~synth.evaluation.predictor`,
the metrics themselves in :mod:`synth.metrics`, and paired bootstrap comparisons of two
predictors in :mod:`~synth.evaluation.paired`.
"""

from synth.evaluation.datasets import (
    Category,
    TestItem,
    read_dataset,
    read_folder,
    read_mvtec,
    read_visa,
)
from synth.evaluation.paired import (
    Comparison,
    Difference,
    MapStats,
    MapStatsCollector,
    metrics_from_stats,
    paired_bootstrap,
    paired_bootstrap_mean,
    summarize_maps,
)
from synth.evaluation.predictor import Predictor, load_predictor
from synth.evaluation.protocol import (
    EvalResult,
    ImageRecord,
    load_prompt_list,
    parse_seeds,
    parse_size,
    run_eval,
    seeded_prompt,
)
from synth.evaluation.report import format_table, save_overlays, write_results

__all__ = [
    "Category",
    "Comparison",
    "Difference",
    "EvalResult",
    "ImageRecord",
    "MapStats",
    "MapStatsCollector",
    "Predictor",
    "TestItem",
    "format_table",
    "load_predictor",
    "load_prompt_list",
    "metrics_from_stats",
    "paired_bootstrap",
    "paired_bootstrap_mean",
    "parse_seeds",
    "parse_size",
    "read_dataset",
    "read_folder",
    "read_mvtec",
    "read_visa",
    "run_eval",
    "save_overlays",
    "seeded_prompt",
    "summarize_maps",
    "write_results",
]
