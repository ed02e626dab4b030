#!/usr/bin/env bash
# Prints the figures the comparisons in training/README.md report for one model directory: the
# probe set, RouteLLM MMLU / GSM8K and three AlpacaEval pairs (each with the kNN baseline's APGR
# beside it), the seven chat pairs with graded answers and their mean, the 25-pair AlpacaEval
# panel's mean (and kNN's), Vicuna and Tulu AIQ (with the saving at 95% and kNN's AIQ). One line
# per figure, `name value…`, so two models' outputs can be pasted side by side.
#
#   bash scripts/compare-model.sh target/some-model        # default: models/default
#
# Needs a release build (`cargo build --release`); about 2 minutes on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/default}
D=${DATA_DIR:-../shared/datasets}
triage=target/release/triage

# The figures at the JSON paths in `$1` (python syntax after `d`, comma-separated) of the eval
# run with the rest of the arguments, on one line.
figure() {
    local paths=$1
    shift
    "$triage" eval --model "$model" --json "$@" 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
print(' '.join(str(round(v, 3)) for v in [$paths]))"
}
apgr() { figure "d['routers']['triage']['apgr']" "$@"; }
# Triage's APGR and the kNN baseline's (on this model's embeddings).
apgr_knn() { figure "d['routers']['triage']['apgr'], d['routers']['knn']['apgr']" "$@"; }
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(round(sum(v)/len(v), 3))" "$@"; }

"$triage" probe --model "$model" --json 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
for k in ['skill_accuracy', 'tool_auc', 'concordance', 'concordance_easy_longer']:
    print(f'probe_{k} {d[k]:.3f}')"

ae=$D/alpaca_eval_gpt4_turbo.jsonl.gz
echo "mmlu_and_knn $(apgr_knn --data $D/routellm_mmlu_gsm8k.jsonl.gz --filter source=routellm_mmlu \
    --strong gpt-4-1106-preview --weak mistralai/Mixtral-8x7B-Instruct-v0.1)"
echo "gsm8k_and_knn $(apgr_knn --data $D/routellm_mmlu_gsm8k.jsonl.gz --filter source=routellm_gsm8k \
    --strong gpt-4-1106-preview --weak mistralai/Mixtral-8x7B-Instruct-v0.1)"
echo "ae_claude2_vicuna7b_and_knn $(apgr_knn --data "$ae" --strong claude-2 --weak vicuna-7b)"
echo "ae_gpt35_alpaca7b_and_knn $(apgr_knn --data "$ae" --strong gpt-3.5-turbo-1106 --weak alpaca-7b)"
echo "ae_claude21_gemma7b_and_knn $(apgr_knn --data "$ae" --strong claude-2.1 --weak gemma-7b-it)"

vicuna=(--data $D/vicuna_bench_judged.jsonl.gz --filter judge=gpt-4)
chat=(
    "$(apgr "${vicuna[@]}" --strong gpt-3.5-turbo:20230327 --weak llama-13b:v1)"
    "$(apgr "${vicuna[@]}" --strong gpt-3.5-turbo:20230327 --weak alpaca-13b:v1)"
    "$(apgr "${vicuna[@]}" --strong gpt-3.5-turbo:20230327 --weak vicuna-7b:20230322-fp16)"
    "$(apgr "${vicuna[@]}" --strong bard:20230327 --weak llama-13b:v1)"
    "$(apgr --data $D/tulu1_human_eval.jsonl.gz --strong chatgpt --weak tulu_7B)"
    "$(apgr --data $D/tulu1_human_eval.jsonl.gz --strong tulu_65B --weak tulu_7B)"
    "$(apgr --data "$ae" --strong gpt4_1106_preview --weak Mixtral-8x7B-Instruct-v0.1_concise)"
)
echo "chat_pairs ${chat[*]}"
echo "chat_pairs_mean $(mean "${chat[@]}")"

panel=() panel_knn=()
for strong in claude-2 claude claude-instant-1.2 gpt-3.5-turbo-0301 FuseChat-Llama-3.1-8B-Instruct; do
    for weak in vicuna-7b alpaca-7b falcon-7b-instruct gemma-2b-it text_davinci_003; do
        read -r ours knn < <(apgr_knn --data "$ae" --strong "$strong" --weak "$weak")
        panel+=("$ours") panel_knn+=("$knn")
    done
done
echo "ae_panel_mean_and_knn $(mean "${panel[@]}") $(mean "${panel_knn[@]}")"

# AIQ, the saving at 95% of the best model's quality, and kNN's AIQ.
aiq="d['routers']['triage']['aiq'], d['routers']['triage']['saving_at_95'], d['routers']['knn']['aiq']"
echo "vicuna_aiq_saving_knn $(figure "$aiq" --data $D/vicuna_bench_judged.jsonl.gz --filter judge=gpt-4 \
    --prices benches/eval_prices.toml)"
echo "tulu_aiq_saving_knn $(figure "$aiq" --data $D/tulu1_human_eval.jsonl.gz --prices benches/eval_prices.toml)"
