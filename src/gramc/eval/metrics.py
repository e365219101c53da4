"""The ranking metrics now live in `gramc.metrics` (LightGCN and the baselines report through them
too, upstream of evaluation); this module keeps `from gramc.eval.metrics import ...` working."""

from ..metrics import (DEFAULT_KS, bootstrap_ci, paired_bootstrap_ci, per_user_metrics, ranks_from_lists,
                       ranks_from_scores, repeat_stats, repeat_warning, summarize)

__all__ = ["DEFAULT_KS", "bootstrap_ci", "paired_bootstrap_ci", "per_user_metrics", "ranks_from_lists",
           "ranks_from_scores", "repeat_stats", "repeat_warning", "summarize"]
