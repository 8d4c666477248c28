"""Experiment plans: many seeded training runs, resumable, aggregated into tables and plots.

`xnet experiment config/experiments/miniature.yaml` reproduces the seeds' claims at CPU scale
(docs/experiments.md): the classification stand-in for ImageNet, Table 1 of the xNet paper, and
Lao et al.'s depth pre-training for segmentation.
"""

from .plan import ClassifierSpec, GroupSpec, Plan, RunJob, RunSpec, expand, load_plan
from .results import aggregate, mean_std
from .runner import collect_results, run_plan

__all__ = ["ClassifierSpec", "GroupSpec", "Plan", "RunJob", "RunSpec", "aggregate",
           "collect_results", "expand", "load_plan", "mean_std", "run_plan"]
