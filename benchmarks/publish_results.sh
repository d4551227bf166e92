#!/usr/bin/env bash
# Regenerate the published results in results/ on one GPU (results/README.md says what each file is).
#
#   benchmarks/publish_results.sh [STEP...]     steps, in this order by default:
#       efficiency  the efficiency sweep of the 1.5B-shape pair (random weights, fp16) to 1M tokens
#       kernel      our WKV kernel against the rwkv package's, T = 1K ... 1M
#       lambada     full LAMBADA wall time through our lm-eval adapter and lm-eval's own hf model
#       recall      the recall probes on the 1.5B-shape pair    (once conf/task/recall.yaml exists)
#       prompt      the prompt-template spread, all tasks        (once conf/task/prompt_sensitivity_all.yaml exists)
#       throughput  training steps per second of both families at every ladder size, timed in alternating
#                   rounds in one process (real text: THROUGHPUT_TOKENS, a .npy of token ids, by default
#                   the corpus' valid split in GPT-NeoX tokens, 1.15M)
#       ladder      the trained ladder (LR sweep, every size of both families) and its scaling fit; longer than
#                   one call: each call trains until LADDER_DEADLINE_S (default 480 s) and the next resumes
#                   it; published once every run has finished
#       trained     the recall probes and the PIQA/BoolQ prompt spread on the ladder's largest trained pair
#       report      results/report/ (HTML + Markdown) from every results/*/results.csv, and the README's
#                   headline block (figures captioned with the GPU the rows name)
#
# Not in the default list (they need the ladder's ~15 minutes of training first): ladder, trained.
#
# Each step measures into outputs/publish/<step>/ (a rerun resumes there; FRESH=1 starts it over), then
# copies the tidy CSV, the run records and its figures into results/<step>/. One step fits one 10-minute
# call on an H200. RWKVBENCH_SHARED_DATA (default ../shared/data) holds eval/ and tokenizer/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SCRATCH=${RWKVBENCH_SCRATCH:-outputs/publish}
DATA=${RWKVBENCH_SHARED_DATA:-../shared/data}
PAIR=(model=rwkv4_1b5 init=random device=cuda dtype=fp16)

scratch() {  # a fresh or resumed measuring folder for a step
  local dir="$SCRATCH/$1"
  if [[ "${FRESH:-0}" == 1 ]]; then rm -rf "$dir"; fi
  mkdir -p "$dir"
  echo "$dir"
}

publish() {  # publish NAME FOLDER: FOLDER's tidy CSV, run records and figures into results/NAME
  local name=$1 src=$2 dst=results/$1
  rm -rf "$dst"
  mkdir -p "$dst"
  cp "$src/results.csv" "$dst/"
  if [[ -f "$src/runs.jsonl" ]]; then cp "$src/runs.jsonl" "$dst/"; fi
  if [[ -f "$src/.hydra/config.yaml" ]]; then cp "$src/.hydra/config.yaml" "$dst/config.yaml"; fi
  "$PY" -m rwkvbench.plots "$dst" --out "$dst"
}

step_efficiency() {
  local dir; dir=$(scratch efficiency_1b5)
  "$PY" -m rwkvbench "${PAIR[@]}" task=efficiency "hydra.run.dir=$dir"
  publish efficiency_1b5 "$dir"
}

step_kernel() {
  local dir; dir=$(scratch kernel)
  rm -f "$dir/results.parquet" "$dir/results.csv"  # a script run, not resumable: always measured anew
  RWKV_CUDA_ON=1 "$PY" benchmarks/compare_wkv_kernels.py --results "$dir" --out "$dir/summary.csv"
  publish kernel "$dir"
  cp "$dir/summary.csv" results/kernel/
}

step_lambada() {
  local dir; dir=$(scratch lambada_wall_time)
  rm -f "$dir/results.parquet" "$dir/results.csv"
  "$PY" benchmarks/lambada_wall_time.py "$DATA/eval" "$DATA/tokenizer/20B_tokenizer.json" --results "$dir" \
    | tee "$dir/output.txt"
  publish lambada_wall_time "$dir"
  cp "$dir/output.txt" results/lambada_wall_time/
}

step_recall() {
  if [[ ! -f conf/task/recall.yaml ]]; then
    echo "recall: skipped, conf/task/recall.yaml is not in this checkout"; return 0
  fi
  local dir; dir=$(scratch recall)
  "$PY" -m rwkvbench "${PAIR[@]}" task=recall "hydra.run.dir=$dir"
  publish recall "$dir"
}

step_prompt() {
  if [[ ! -f conf/task/prompt_sensitivity_all.yaml ]]; then
    echo "prompt: skipped, conf/task/prompt_sensitivity_all.yaml is not in this checkout"; return 0
  fi
  local dir; dir=$(scratch prompt)
  "$PY" -m rwkvbench "${PAIR[@]}" task=prompt_sensitivity_all "data_dir=$DATA/eval" "hydra.run.dir=$dir"
  publish prompt "$dir"
}

step_throughput() {
  local dir tokens; dir=$(scratch train_throughput)
  rm -f "$dir/results.parquet" "$dir/results.csv"  # a script run, not resumable: always measured anew
  tokens=${THROUGHPUT_TOKENS:-$dir/tokens_valid.npy}
  if [[ ! -f "$tokens" ]]; then
    RWKVBENCH_NEOX_TOKENIZER=${RWKVBENCH_NEOX_TOKENIZER:-$DATA/tokenizer/20B_tokenizer.json} \
      "$PY" benchmarks/train_throughput.py --make-tokens "$tokens" "$DATA/corpus/valid.jsonl.xz"
  fi
  "$PY" benchmarks/train_throughput.py --settings graphs --tokens "$tokens" --budget-s 480 --out "$dir/summary.csv" \
    --results "$dir" | tee "$dir/output.txt"
  publish train_throughput "$dir"
  cp "$dir/summary.csv" "$dir/output.txt" results/train_throughput/
}

step_ladder() {
  local dir; dir=$(scratch ladder)
  "$PY" -m rwkvbench.train mode=ladder "out_dir=$dir" "data.root=$DATA" "deadline_s=${LADDER_DEADLINE_S:-480}"
  if ! compgen -G "$dir/models/model/*.yaml" >/dev/null; then  # exported once every run has finished
    echo "ladder: not finished yet (run this step again: it resumes)"; return 0
  fi
  publish ladder "$dir"
  cp "$dir/ladder.md" "$dir/scaling.png" results/ladder/
}

step_trained() {  # the largest pair the ladder exported: <family>_<size>.yaml, sizes sort as s1 < s2 < ...
  local models="$SCRATCH/ladder/models" largest
  largest=$(ls "$models/model" 2>/dev/null | grep '^rwkv4_' | sort -V | tail -1 | sed 's/\.yaml$//' || true)
  if [[ -z "$largest" ]]; then echo "trained: no trained pair in $models yet (run the ladder step)" >&2; return 1; fi
  local dir; dir=$(scratch recall_trained)
  # passkey to 64K, not 1M: the pair was trained at 1024 tokens, and one batch of 1M-token passkey items
  # through a 128M-parameter Transformer ran past 9 minutes on an H200 (attention is quadratic)
  "$PY" -m rwkvbench -cd "$models" "model=$largest" device=cuda task=recall \
    'task.parts.3.context_lens=[1024,4096,16384,65536]' "hydra.run.dir=$dir"
  publish recall_trained "$dir"
  dir=$(scratch prompt_trained)
  "$PY" -m rwkvbench -cd "$models" "model=$largest" device=cuda task=prompt_sensitivity 'task.base=[piqa,boolq]' \
    "data_dir=$DATA/eval" "hydra.run.dir=$dir"
  publish prompt_trained "$dir"
}

step_report() {
  local csvs=(results/*/results.csv)
  if [[ ! -f "${csvs[0]}" ]]; then echo "report: nothing published in results/ yet" >&2; return 1; fi
  "$PY" -m rwkvbench.report "${csvs[@]}" --out results/report --title "rwkvbench: published results"
  "$PY" benchmarks/publish_readme.py results
}

steps=("$@")
if [[ ${#steps[@]} -eq 0 ]]; then steps=(efficiency kernel lambada recall prompt throughput report); fi
for s in "${steps[@]}"; do
  if ! declare -F "step_$s" >/dev/null; then
    echo "unknown step '$s' (efficiency kernel lambada recall prompt throughput ladder trained report)" >&2; exit 2
  fi
done
for s in "${steps[@]}"; do
  start=$SECONDS
  "step_$s"
  echo "[publish] $s: $((SECONDS - start)) s"
done
