#!/usr/bin/env bash
# The learning loop on chat preferences, measured (README, "Retrained on replayed traffic"):
# replay 10%, 20% and 40% of AlpacaEval's prompts as traffic with feedback, retrain the shipped
# model on each log (`train --from-log --init models/default`), and measure on the prompts the
# retrained model has not seen. AlpacaEval is evaluation only: the shipped model never trains on
# it, and what this writes stays under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DATA_DIR:-../shared/datasets}
B=target/release/triage
cargo build --release -q
for fraction in 0.1 0.2 0.4; do
    log=target/traffic-alpaca-$fraction.db
    rm -f "$log" "$log"-*
    $B replay --data "$D/alpaca_eval_gpt4_turbo.jsonl.gz" --fraction "$fraction" --log "$log"
    $B train --from-log "$log" --init models/default --out "target/retrained-alpaca-$fraction" --quiet
    for pair in "claude-2 vicuna-7b" "gpt-3.5-turbo-1106 alpaca-7b"; do
        set -- $pair
        echo "== $fraction replayed: $1 vs $2"
        $B eval --model "target/retrained-alpaca-$fraction" --data "$D/alpaca_eval_gpt4_turbo.jsonl.gz" \
            --strong "$1" --weak "$2" | grep -E '^(triage|knn|length|random) |held out'
    done
    echo "== $fraction replayed: Tulu-1"
    $B eval --model "target/retrained-alpaca-$fraction" --data "$D/tulu1_human_eval.jsonl.gz" \
        --prices benches/eval_prices.toml | grep -E '^(triage|knn|random) '
done
