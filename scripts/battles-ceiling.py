#!/usr/bin/env python3
"""Can anything that reads the prompt pick Chatbot Arena winners better than the models' mean
abilities?

`triage eval --battles` finds that the model triage predicts better wins no more often than the
model of higher mean ability. This script asks whether the battles themselves hold per-prompt
preference that simple prompt-aware rules could find. Five folds by prompt: Bradley–Terry
ratings are fitted on four, and the decided battles of the fifth are predicted by

- one rating per model (mean ability, the prompt unread);
- one rating per model and task kind, shrunk toward the model's overall rating, for two ways of
  telling kinds apart: the keyword rule of `triage eval` (code and maths words) and the prompt's
  length (under or over 300 characters);
- the nearest training prompts (word overlap) on which the same two models met.

    python3 scripts/battles-ceiling.py [DATA_DIR]      # default ../shared/datasets; stdlib only

Each figure is the share of decided held-out battles won by the model the rule predicts better
(a predicted tie counts half), with one standard error.
"""

import collections
import gzip
import hashlib
import json
import math
import sys
from pathlib import Path

FOLDS = 5
# The keyword rule of `triage eval` (crates/learn/src/eval/pair.rs, CODE_OR_MATHS_WORDS).
CODE_OR_MATHS = set(
    "code function python javascript java typescript sql program programming script bug debug "
    "regex html css api compile algorithm class rust bash json math prove proof solve equation "
    "calculate compute integral derivative probability theorem sum".split()
)


def words(text):
    return ["".join(c for c in w if c.isalnum()) for w in text.lower().split()]


def names_code_or_maths(text):
    lower = text.lower()
    return "```" in lower or "c++" in lower or any(w in CODE_OR_MATHS for w in words(text))


def battles(path):
    """One (prompt, a, b, P(a beats b)) per battle; "both bad" is a tie, as training reads it."""
    seen = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            a, b = r["model"], r["opponent"]
            key = r.get("battle_id") or (r["prompt_id"], *sorted((a, b)))
            if key in seen:
                continue
            p = 0.5 if r["score"] == 0.25 else r["score"]
            seen[key] = (r["prompt_id"], r["prompt"], a, b, p)
    return list(seen.values())


def fit(rows, prior=None, strength=0.05, steps=300, lr=0.5):
    """Bradley–Terry ratings by gradient ascent, each pulled toward `prior` (0 without one)."""
    prior = prior or {}
    models = {m for _, _, a, b, _ in rows for m in (a, b)}
    r = {m: prior.get(m, 0.0) for m in models}
    for _ in range(steps):
        grad = {m: -strength * (r[m] - prior.get(m, 0.0)) for m in models}
        for _, _, a, b, t in rows:
            g = t - 1.0 / (1.0 + math.exp(r[b] - r[a]))
            grad[a] += g
            grad[b] -= g
        for m in models:
            r[m] += lr * grad[m] / max(1, len(rows)) * 10
    return r


def credit(winner, loser):
    return 1.0 if winner > loser else 0.0 if winner < loser else 0.5


def by_kind(train, kind_of, overall, strength):
    groups = collections.defaultdict(list)
    for row in train:
        groups[kind_of(row[1])].append(row)
    return {k: fit(rows, prior=overall, strength=strength) for k, rows in groups.items()}


def nearest_vote(train_words, prompt, a, b, overall, k=5):
    """The winner among the k training battles of the same two models on the most similar
    prompts (word Jaccard), else the overall ratings."""
    mine = set(words(prompt))
    met = []
    for text_words, (_, _, x, y, t) in train_words:
        if {x, y} != {a, b}:
            continue
        union = len(mine | text_words) or 1
        met.append((len(mine & text_words) / union, t if x == a else 1 - t))
    if not met:
        return credit(overall.get(a, 0.0), overall.get(b, 0.0))
    met.sort(reverse=True)
    share = sum(t for _, t in met[:k]) / len(met[:k])
    return credit(share, 0.5)


RULES = [
    "mean ability (the prompt unread)",
    "per keyword kind (code/maths or not)",
    "per length (over 300 characters or not)",
    "nearest prompts where the two met (k=5)",
]


def credits(train, test):
    """Each rule's credit on each decided test battle between models seen in training."""
    overall = fit(train)
    keyword = by_kind(train, names_code_or_maths, overall, 0.5)
    length = by_kind(train, lambda text: len(text) > 300, overall, 0.5)
    train_words = [(set(words(r[1])), r) for r in train]
    out = {name: [] for name in RULES}
    for _, prompt, a, b, t in test:
        if t == 0.5 or a not in overall or b not in overall:
            continue
        w, l = (a, b) if t > 0.5 else (b, a)
        out[RULES[0]].append(credit(overall[w], overall[l]))
        for name, kinds, kind in [
            (RULES[1], keyword, names_code_or_maths(prompt)),
            (RULES[2], length, len(prompt) > 300),
        ]:
            ratings = kinds.get(kind, overall)
            out[name].append(credit(ratings.get(w, overall[w]), ratings.get(l, overall[l])))
        vote = nearest_vote(train_words, prompt, a, b, overall)
        out[RULES[3]].append(vote if t > 0.5 else 1 - vote)
    return out


def report(title, out):
    n = len(out[RULES[0]])
    print(f"{title}: {n} decided held-out battles; won by the model predicted better by …")
    for name in RULES:
        share = sum(out[name]) / n
        se = math.sqrt(share * (1 - share) / n)
        print(f"  {name:<42} {100 * share:5.1f}%  (± {100 * se:.1f})")


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
    rows = battles(data / "chat_arena_battles.jsonl.gz")
    print(f"{len(rows)} battles")
    draw = lambda pid: int(hashlib.md5(pid.encode()).hexdigest(), 16) % 1000 / 1000
    # The learning loop's shares (a different draw of prompts than `triage replay`'s).
    for share in (0.1, 0.2, 0.4):
        train = [r for r in rows if draw(r[0]) < share]
        test = [r for r in rows if draw(r[0]) >= share]
        report(f"{share:.0%} of the prompts to fit on", credits(train, test))
    pooled = {name: [] for name in RULES}
    for f in range(FOLDS):
        in_fold = lambda r: int(draw(r[0]) * FOLDS) == f
        out = credits([r for r in rows if not in_fold(r)], [r for r in rows if in_fold(r)])
        for name in RULES:
            pooled[name] += out[name]
    report(f"{FOLDS} folds (80% to fit on)", pooled)


if __name__ == "__main__":
    main()
