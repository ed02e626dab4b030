#!/usr/bin/env bash
# The new-model experiment (README, "A new model learned from traffic"). One RouterBench model
# (NEW, default Yi-34B-Chat: cheap, and `auto`'s second choice on RouterBench) is held back from
# the shipped recipe (`exclude_models`), as if it had just appeared; then N of its RouterBench
# outcomes arrive as judged traffic (`triage replay --model`), `train --from-log --init` learns
# its θ, and we measure how far θ is from the θ that the full data gives, and how `auto` routes
# RouterBench's test prompts (real per-call costs) before and after: the `auto` profile's
# operating point, and the policy's whole cost-quality curve (AIQ, saving at 95% of the best
# model's quality). One line per N (NS, default "50 100 200 300 600 1200").
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DATA_DIR:-../shared/datasets}
B=target/release/triage
NEW=${NEW:-zero-one-ai/Yi-34B-Chat}
W=target/new-model/${NEW//\//_} # one directory per held-back model: two can run side by side
cargo build --release -q
mkdir -p "$W"
cat >"$W/recipe.toml" <<RECIPE
base = "$PWD/training/default.toml"
exclude_models = ["$NEW"]
RECIPE
$B train --recipe "$W/recipe.toml" --out "$W/base" --quiet
measure() { # model dir, label
    $B eval --model "$1" --data "$D/routerbench_slice.jsonl.gz" \
        --filter subset=arc_challenge_test,winograde_test,mbpp_test --keep-seen --json 2>/dev/null |
        python3 -c '
import json, math, sys
label, new, model_dir = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(sys.stdin)
auto = r["profiles"]["auto"]
theta = json.load(open(model_dir + "/triage.json"))["abilities"].get(new)
ref = json.load(open("models/default/triage.json"))["abilities"][new]
if theta is None:
    dist = "θ unknown to the model (eval fits it on its 20% calibration split)"
else:
    cos = sum(a * b for a, b in zip(theta, ref)) / math.sqrt(sum(a * a for a in theta) * sum(b * b for b in ref))
    mad = sum(abs(a - b) for a, b in zip(theta, ref)) / len(ref)
    dist = f"θ vs full-data θ: cosine {cos:.3f}, mean |Δ| {mad:.3f}"
share, quality, cost = auto["calls"].get(new, 0), auto["quality"], auto["cost"]
aiq, saving = r["routers"]["triage"]["aiq"], r["routers"]["triage"]["saving_at_95"] or 0.0
print(f"{label:>14}: {dist}; auto: {new} share {share:.3f}, quality {quality:.3f}, $/call {cost:.5f}; "
      f"policy curve: AIQ {aiq:.3f}, saving at 95% {saving:.3f}")
' "$2" "$NEW" "$1"
}
measure "$W/base" "held back"
for n in ${NS:-50 100 200 300 600 1200}; do
    log=$W/traffic-$n.db
    rm -f "$log" "$log"-*
    fraction=$(python3 -c "print(min(1.0, $n / 3178))")
    $B replay --data "$D/routerbench_slice.jsonl.gz" --model "$NEW" --fraction "$fraction" \
        --salt new-model --log "$log" >/dev/null
    # The retrain reads the held-back recipe too: the default recipe would bring back all of
    # NEW's public outcomes beside the N in the log.
    $B train --from-log "$log" --recipe "$W/recipe.toml" --init "$W/base" \
        --out "$W/$n" --quiet
    measure "$W/$n" "$n outcomes"
done
measure models/default "full data"
