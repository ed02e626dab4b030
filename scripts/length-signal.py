#!/usr/bin/env python3
"""Does a longer prompt favour the stronger model, source by source?

The prompt-length router (strong model for the longest prompts first) beats triage on RouteLLM's
MMLU and GSM8K and on AlpacaEval's gpt-3.5/alpaca-7b pair. A per-model length slope in q would
learn the length signal from the training sources, so this script asks whether that signal has
one direction there: for each source it prints the length router's APGR for the strongest model
against the median and the weakest, and for RouteLLM's pair (GPT-4-1106 against Mixtral-8x7B)
wherever a source has both (0.5 is random; under 0.5 means the *shorter* prompts gain
most from the strong model).

    python3 scripts/length-signal.py [DATA_DIR]     # default ../shared/datasets; stdlib only
"""

import collections
import math
import sys
from pathlib import Path

from apgr import apgr, rows

SOURCES = [  # (file, prompt file for sources that keep prompts apart, split rows by)
    ("mmlu_pro_outcomes.jsonl.gz", "mmlu_pro_prompts.jsonl.gz", "source"),
    ("llmrouter_dcrouter.jsonl.gz", None, "source"),
    ("routerbench_slice.jsonl.gz", None, "subset"),
    ("routellm_mmlu_gsm8k.jsonl.gz", None, "source"),  # held out: the pair triage is measured on
]
ROUTELLM_STRONG = "gpt-4-1106-preview"


def groups(data_dir, file, prompt_file, split):
    texts = {}
    if prompt_file:
        texts = {r["prompt_id"]: r["prompt"] for r in rows(data_dir / prompt_file)}
    outcomes = collections.defaultdict(lambda: collections.defaultdict(dict))
    for r in rows(data_dir / file):
        if r["score"] is None or math.isnan(r["score"]):
            continue
        group = r[split].removesuffix("_test").removesuffix("_train")
        texts.setdefault(r["prompt_id"], r.get("prompt", ""))
        outcomes[group][r["prompt_id"]][r["model"]] = r["score"]
    return texts, outcomes


def report(name, texts, by_prompt):
    counts = collections.Counter(m for models in by_prompt.values() for m in models)
    common = [m for m, n in counts.items() if n >= 0.9 * len(by_prompt)]
    mean = {m: sum(p[m] for p in by_prompt.values() if m in p) / counts[m] for m in common}
    ranked = sorted(common, key=lambda m: -mean[m])
    if len(ranked) < 2:
        return
    pairs = [(ranked[0], ranked[len(ranked) // 2]), (ranked[0], ranked[-1])]
    # RouteLLM's own pair, wherever a source has both models under any spelling
    mixtral = [m for m in ranked if "mixtral-8x7b" in m.lower() and ("instruct" in m.lower() or "chat" in m)]
    if ROUTELLM_STRONG in ranked and mixtral:
        pairs.append((ROUTELLM_STRONG, mixtral[0]))
    for strong, weak in dict.fromkeys(pairs):
        ids = [p for p, m in by_prompt.items() if strong in m and weak in m]
        figure = apgr([len(texts[p]) for p in ids], [by_prompt[p][strong] for p in ids],
                      [by_prompt[p][weak] for p in ids])
        print(f"  {name:<22} {strong[-28:]:>28} vs {weak[-28:]:<28} {len(ids):>6}  {figure:.3f}")


def main():
    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
    print(f"  {'source':<22} {'strong':>28} vs {'weak':<28} {'prompts':>6}  length APGR")
    for file, prompt_file, split in SOURCES:
        texts, outcomes = groups(data_dir, file, prompt_file, split)
        for group, by_prompt in sorted(outcomes.items()):
            report(group, texts, by_prompt)


if __name__ == "__main__":
    main()
