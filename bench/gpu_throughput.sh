#!/usr/bin/env bash
# One GPU, one shot: the CUDA tests, then the engine's throughput on a slice of V4-Flash.
#
#   bash bench/gpu_throughput.sh          (from the repository root)
#
# A dry run on the CPU, to check the script itself: CONFIG=tiny DEVICE=cpu LAYERS=2
# CONCURRENCY=1,2 INPUT_TOKENS=32 OUTPUT_TOKENS=4 SKIP_TESTS=1 PYTHON=.venv/bin/python bash ...
#
# 1. the CUDA tests (TESTS: tests/kernels, tests/model/test_quantized.py,
#    tests/model/test_decode_graphs.py), bounded by TEST_TIMEOUT;
# 2. `flashbeam bench engine --config CONFIG --layers LAYERS --tensor-parallel 1` once per
#    concurrency in CONCURRENCY, each bounded by its own timeout, all on one random checkpoint in
#    the official FP8/FP4 layout that the first run writes under WORK and the others reuse;
# 3. `flashbeam bench decode-graphs` at batch GRAPH_BATCHES, on random tiny weights and on the
#    same checkpoint's layers: decode tokens/s with CUDA graphs vs eager ($OUT/graphs-*.json);
# 4. $OUT/gpu_throughput.json: the machine, the tests' outcome and every run's result (or why it
#    has none). Logs: $OUT/tests.log, $OUT/bench.log; each run's JSON: $OUT/throughput-cC.json.
#
# Settings (environment variables, defaults in brackets): OUT [./out], WORK
# [/tmp/flashbeam-gpubench], PYTHON [python3], CONFIG [official], DEVICE [cuda], LAYERS [4], CONCURRENCY [1,16,256],
# INPUT_TOKENS [8192], OUTPUT_TOKENS [1024], MAX_BATCH_TOKENS [16384], TESTS [tests/kernels
# tests/model/test_quantized.py tests/model/test_decode_graphs.py], TEST_TIMEOUT [150],
# GRAPH_BATCHES [1,8,64], GRAPH_TIMEOUT [90 per model],
# BENCH_TIMEOUT [120 s per concurrency; the first also writes the checkpoint, +WRITE_TIMEOUT
# [90]], SKIP_TESTS [0], KEEP_CHECKPOINT [0], WHEELS [.whl: wheels of missing packages].
set -u

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${OUT:-./out}" && cd "${OUT:-./out}" && pwd)
WORK=${WORK:-/tmp/flashbeam-gpubench}
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-official}
DEVICE=${DEVICE:-cuda}
LAYERS=${LAYERS:-4}
CONCURRENCY=${CONCURRENCY:-1,16,256}
INPUT_TOKENS=${INPUT_TOKENS:-8192}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-1024}
MAX_BATCH_TOKENS=${MAX_BATCH_TOKENS:-16384}
TESTS=${TESTS:-tests/kernels tests/model/test_quantized.py tests/model/test_decode_graphs.py}
GRAPH_BATCHES=${GRAPH_BATCHES:-1,8,64}
GRAPH_TIMEOUT=${GRAPH_TIMEOUT:-90}
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
WRITE_TIMEOUT=${WRITE_TIMEOUT:-90}
WHEELS=${WHEELS:-$REPO/.whl}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK/steps"

# The repository root is the package `flashbeam`: make it importable under that name without
# putting the root itself on sys.path (its folders would shadow packages named like them).
if ! (cd "$WORK" && "$PYTHON" -c "import flashbeam" 2>/dev/null); then
    mkdir -p "$WORK/site"
    ln -sfn "$REPO" "$WORK/site/flashbeam"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Packages the GPU image lacks (llguidance) travel as wheels; nothing can be downloaded there.
if ! (cd "$WORK" && "$PYTHON" -c "import llguidance" 2>/dev/null) && compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/wheels" "$WHEELS"/*.whl
    export PYTHONPATH="$WORK/wheels:$PYTHONPATH"
fi

step() {  # step NAME TIMEOUT LOG COMMAND...: run bounded, record rc and seconds as JSON
    local name=$1 limit=$2 log=$3 started rc
    shift 3
    started=$(date +%s)
    (cd "$WORK" && timeout --kill-after=15 "$limit" "$@") >"$WORK/steps/$name.out" 2>>"$log"
    rc=$?
    printf '{"step": "%s", "rc": %d, "timed_out": %s, "limit_s": %d, "wall_s": %d}\n' \
        "$name" "$rc" "$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)" "$limit" \
        "$(($(date +%s) - started))" >"$WORK/steps/$name.step.json"
    return $rc
}

if [ "${SKIP_TESTS:-0}" != 1 ]; then
    echo "== CUDA tests (limit ${TEST_TIMEOUT} s)"
    # shellcheck disable=SC2046  # one argument per test path
    step tests "$TEST_TIMEOUT" "$OUT/tests.log" "$PYTHON" -m pytest -q -p no:cacheprovider \
        -c "$REPO/pyproject.toml" --rootdir "$REPO" $(printf "$REPO/%s " $TESTS)
    cat "$WORK/steps/tests.out" >>"$OUT/tests.log"
    tail -n 3 "$OUT/tests.log"
fi

first=1
for c in ${CONCURRENCY//,/ }; do
    limit=$BENCH_TIMEOUT
    [ $first = 1 ] && limit=$((BENCH_TIMEOUT + WRITE_TIMEOUT))
    echo "== $CONFIG, $LAYERS layers, TP=1, concurrency $c, $INPUT_TOKENS in / $OUTPUT_TOKENS out (limit $limit s)"
    if step "c$c" "$limit" "$OUT/bench.log" "$PYTHON" -m flashbeam bench engine --config "$CONFIG" \
        --layers "$LAYERS" --tensor-parallel 1 --concurrency "$c" --input-tokens "$INPUT_TOKENS" \
        --output-tokens "$OUTPUT_TOKENS" --max-batch-tokens "$MAX_BATCH_TOKENS" --device "$DEVICE" \
        --checkpoint-dir "$WORK/checkpoint"; then
        cp "$WORK/steps/c$c.out" "$OUT/throughput-c$c.json"
    fi
    first=0
    cat "$WORK/steps/c$c.step.json"
done

for model in tiny checkpoint; do
    args=(--preset tiny)
    if [ $model = checkpoint ]; then
        [ -d "$WORK/checkpoint" ] || continue
        args=(--checkpoint "$WORK/checkpoint")
    fi
    echo "== decode with CUDA graphs vs eager, $model, batch $GRAPH_BATCHES (limit $GRAPH_TIMEOUT s)"
    if step "graphs-$model" "$GRAPH_TIMEOUT" "$OUT/bench.log" "$PYTHON" -m flashbeam bench \
        decode-graphs --device "$DEVICE" --batch "$GRAPH_BATCHES" "${args[@]}"; then
        cp "$WORK/steps/graphs-$model.out" "$OUT/graphs-$model.json"
    fi
    cat "$WORK/steps/graphs-$model.step.json"
done

"$PYTHON" - "$WORK/steps" "$OUT" "$CONCURRENCY" <<'EOF'
import json, subprocess, sys
from pathlib import Path

steps, out, concurrency = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")


def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine():
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu}
    except ImportError as e:
        info = {"torch": f"not importable: {e}"}
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        smi = subprocess.run(query, capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"not run: {e}"
    return info


runs = []
for c in concurrency:
    result = read(out / f"throughput-c{c}.json")
    if result is None:  # no result: say why (the step's exit code, a timeout)
        runs.append({"concurrency": int(c), "step": read(steps / f"c{c}.step.json")})
    else:
        extra = {"load_s": result["load_s"], "checkpoint": result["checkpoint"]}
        runs.append({**result["results"][0], **extra})
measured = [read(out / f"throughput-c{c}.json") for c in concurrency]
summary = next((dict(m) for m in measured if m), {})
summary.update(benchmark="gpu-throughput", machine=machine())
summary["tests"] = read(steps / "tests.step.json")
if summary["tests"] is not None:
    lines = (out / "tests.log").read_text(errors="replace").strip().splitlines()
    summary["tests"]["summary"] = lines[-1] if lines else ""
summary.pop("checkpoint", None)
summary.pop("load_s", None)
summary["concurrency"] = [int(c) for c in concurrency]
summary["results"] = runs
summary["decode_graphs"] = {
    model: read(out / f"graphs-{model}.json") or read(steps / f"graphs-{model}.step.json")
    for model in ("tiny", "checkpoint")
}
(out / "gpu_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF

[ "${KEEP_CHECKPOINT:-0}" = 1 ] || rm -rf "$WORK/checkpoint"
