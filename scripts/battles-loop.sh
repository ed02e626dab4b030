#!/usr/bin/env bash
# The learning loop on Chatbot Arena battles, measured (README, "The loop on Chatbot Arena
# battles"): a starting model trained without the battles (`training/compare/no-battles.toml`),
# 10%, 20% and 40% of the battles' prompts replayed as traffic, once as preferences (each battle
# as the user's vote between two answers, trained through the Bradley–Terry loss) and once as
# grades (each side's vote its answer's score: `opponent` removed), `train --from-log --init`,
# and `eval --battles` on the prompts the retrained model has not seen. Writes under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DATA_DIR:-../shared/datasets}
B=target/release/triage
R=training/compare/no-battles.toml
cargo build --release -q
[ -f target/no-battles/triage.json ] || $B train --recipe "$R" --out target/no-battles --quiet
zcat "$D/chat_arena_battles.jsonl.gz" | jq -c 'del(.opponent)' >target/battles-as-grades.jsonl
echo "== no battles"
$B eval --battles --model target/no-battles --data "$D/chat_arena_battles.jsonl.gz" | grep -E 'measured|predicts|ability'
for fraction in 0.1 0.2 0.4; do
    for shape in preferences grades; do
        data=$D/chat_arena_battles.jsonl.gz
        [ "$shape" = grades ] && data=target/battles-as-grades.jsonl
        log=target/traffic-battles-$shape-$fraction.db
        out=target/retrained-battles-$shape-$fraction
        rm -f "$log" "$log"-*
        $B replay --data "$data" --fraction "$fraction" --log "$log" >/dev/null
        $B train --from-log "$log" --recipe "$R" --init target/no-battles --out "$out" --quiet
        echo "== $fraction replayed as $shape"
        $B eval --battles --model "$out" --data "$D/chat_arena_battles.jsonl.gz" | grep -E 'measured|predicts|ability'
    done
done
