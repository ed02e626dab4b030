"""Shared by the stdlib-only analysis scripts (`exam-ceiling.py`, `length-signal.py`): reading
the shared outcome files and RouteLLM's APGR. Run those scripts as `python3 scripts/<name>.py`,
which puts this directory on the import path."""

import gzip
import json
import random


def rows(path):
    """The rows of a gzip JSON-lines outcome file."""
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def apgr(score, strong, weak, tie_orders=20):
    """RouteLLM's APGR of sending the highest scores to the strong model first: the mean, over
    every share sent, of the share of the strong/weak gap recovered (0.5 is random). Ties go in
    random order, averaged over several orders (a 0/1 score ties half the prompts, and one order
    moves APGR by ±0.01)."""
    gap = sum(strong) - sum(weak)
    total = 0.0
    for seed in range(tie_orders):
        rng = random.Random(seed)
        order = sorted(range(len(score)), key=lambda i: (-score[i], rng.random()))
        gained, area = 0.0, 0.0
        for i in order:
            before = gained
            gained += strong[i] - weak[i]
            area += (before + gained) / 2
        total += area / len(order) / gap
    return total / tie_orders
