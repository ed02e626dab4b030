#!/usr/bin/env python3
"""How far can the training data's own outcomes carry RouteLLM's MMLU and GSM8K pairs?

RouteLLM's MMLU and GSM8K sets (GPT-4-1106 strong, Mixtral-8x7B weak) are held out from
training. Many of their questions also appear in the training sources: MMLU-Pro rewrote MMLU
questions (31 models answered them), and dcrouter holds GSM8K problems (9 open models). For those
shared questions this script ranks by what the training data *knows* about each question — its
failure rate among the training models, or one training model's own failure — and reports the
APGR that ranking reaches, beside the prompt-length router on the same questions. A classifier
that predicted the training outcomes perfectly could do no better than these rankings.

    python3 scripts/exam-ceiling.py [DATA_DIR]      # default ../shared/datasets; stdlib only

APGR is RouteLLM's: the mean, over every share of prompts sent to the strong model (most
"upgradeable" first), of the share of the strong/weak gap recovered; 0.5 is random.
"""

import collections
import sys
from pathlib import Path

from apgr import apgr, rows

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def show(router, score, strong, weak):
    print(f"  {router:<46} APGR {apgr(score, strong, weak):.3f}")


def words(text):
    return " ".join(text.lower().split())


def mmlu_stem(prompt):
    # MMLU-Pro kept the question and added options: the text before the first option is shared.
    return words(prompt.split("\nA.")[0])


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
    pairs = collections.defaultdict(dict)
    text, source = {}, {}
    for r in rows(data / "routellm_mmlu_gsm8k.jsonl.gz"):
        pairs[r["prompt_id"]][r["model"]] = r["score"]
        text[r["prompt_id"]], source[r["prompt_id"]] = r["prompt"], r["source"]

    # MMLU: MMLU-Pro outcomes of the same questions.
    pro_stem = {
        r["prompt_id"]: mmlu_stem(r["prompt"]) for r in rows(data / "mmlu_pro_prompts.jsonl.gz")
    }
    pro = collections.defaultdict(dict)
    for r in rows(data / "mmlu_pro_outcomes.jsonl.gz"):
        pro[pro_stem[r["prompt_id"]]][r["model"]] = r["score"]
    shared = [p for p in text if source[p] == "routellm_mmlu" and mmlu_stem(text[p]) in pro]
    strong = [pairs[p][STRONG] for p in shared]
    weak = [pairs[p][WEAK] for p in shared]
    seen = [pro[mmlu_stem(text[p])] for p in shared]
    print(f"RouteLLM MMLU questions also in MMLU-Pro: {len(shared)}")
    show("prompt length", [len(text[p]) for p in shared], strong, weak)
    failure = [1 - sum(s.values()) / len(s) for s in seen]
    show("failure rate of the 31 MMLU-Pro models", failure, strong, weak)
    for model in ["Mixtral-8x7B-Instruct-v0.1", "Meta-Llama-3_1-8B-Instruct", "gpt-4o-2024-05-13"]:
        show(f"{model} failed it", [1 - s.get(model, 0.5) for s in seen], strong, weak)

    # GSM8K: dcrouter's nine open models on the same problems.
    dc_scores = collections.defaultdict(list)
    dc_text = {}
    for r in rows(data / "llmrouter_dcrouter.jsonl.gz"):
        dc_scores[r["prompt_id"]].append(r["score"])
        dc_text[r["prompt_id"]] = words(r["prompt"])
    shared, failure = [], []
    for p in text:
        if source[p] != "routellm_gsm8k":
            continue
        question = words(text[p])[:120]
        match = next((d for d, t in dc_text.items() if question in t), None)
        if match is not None:
            shared.append(p)
            failure.append(1 - sum(dc_scores[match]) / len(dc_scores[match]))
    strong = [pairs[p][STRONG] for p in shared]
    weak = [pairs[p][WEAK] for p in shared]
    print(f"RouteLLM GSM8K problems also in dcrouter: {len(shared)}")
    show("prompt length", [len(text[p]) for p in shared], strong, weak)
    show("failure rate of dcrouter's 9 models", failure, strong, weak)


if __name__ == "__main__":
    main()
