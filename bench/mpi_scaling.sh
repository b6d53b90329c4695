#!/usr/bin/env bash
# Data parallelism on this machine, and on paper beyond it (issue 16, item 6).
#
# Measures, in one run and alternating (the machine is shared: ratios, not absolute rates),
# at the benchmark shapes (a) L4 d256 H4 T256 B8 and (b) L6 d384 H6 T512 B4 on KJV:
#   one process of 2 threads at batch B   against   2 processes of 1 thread at batch B/2
# (the same global batch and the same arithmetic): training tokens/s (median over the steps
# after the first 3) and the time per step spent in the gradient allreduce (the log's comm_s,
# which includes waiting for the slower process). Then, from the measured gradient size and
# one process's step time, the scaling of a ring allreduce to 8, 64 and 512 processes at 10 and
# 100 Gbit/s (per process: weak scaling, each keeps its batch), without overlap of the
# exchange with the backward pass: t_comm = 2 (W-1)/W x bytes / bandwidth + 2 (W-1) x latency.
# Prints a markdown table and writes runs/bench/mpi/results.jsonl.
# usage: bench/mpi_scaling.sh [STEPS] [REPEATS]     (default 30 steps, 2 repeats)
#        needs build/mnemo and build-mpi/mnemo (-DMNEMO_MPI=ON) and data/kjv
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ]; then sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
steps=${1:-30} reps=${2:-2}
out=runs/bench/mpi
mkdir -p "$out"
[ -x build-mpi/mnemo ] || { echo "mpi_scaling: build build-mpi with -DMNEMO_MPI=ON first" >&2; exit 1; }
[ -s data/kjv/train.bin ] || { echo "mpi_scaling: prepare data/kjv first (scripts/main.sh)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
res="$out/results.jsonl"
: >"$res"
for shape in "a 4 256 4 256 8" "b 6 384 6 512 4"; do
    read -r name L C H T B <<<"$shape"
    common=(--train data/kjv/train.bin --n_layer "$L" --d_model "$C" --n_head "$H" --n_ctx "$T"
            --steps "$steps" --warmup 2 --eval_every 0 --ckpt_every 0 --print_every 1000
            --optimizer adamw --overwrite)
    for r in $(seq 1 "$reps"); do
        OMP_NUM_THREADS=2 build-mpi/mnemo train "${common[@]}" --out "$out/$name.1x2" --batch "$B" \
            --threads 2 >/dev/null 2>&1
        OMP_NUM_THREADS=1 mpirun -np 2 --bind-to core build-mpi/mnemo train "${common[@]}" \
            --out "$out/$name.2x1" --batch $((B / 2)) --threads 1 >/dev/null 2>&1
        /usr/bin/python3 - "$out/$name" "$name" "$r" >>"$res" <<'PY'
import json, statistics, sys
base, name, rep = sys.argv[1], sys.argv[2], int(sys.argv[3])
def steps(d):
    return [json.loads(l) for l in open(d + "/log.jsonl") if json.loads(l)["type"] == "step"][3:]
row = {"shape": name, "repeat": rep}
for cfg in ("1x2", "2x1"):
    s = steps(base + "." + cfg)
    row[cfg + "_tok_s"] = statistics.median(x["tokens_per_s"] for x in s)
    row[cfg + "_comm_ms"] = 1e3 * statistics.median(x["comm_s"] for x in s)
    row[cfg + "_step_ms"] = 1e3 * statistics.median(x["elapsed_s"] - y["elapsed_s"]
                                                    for x, y in zip(s[1:], s))
start = [json.loads(l) for l in open(base + ".1x2/log.jsonl")][0]
row["n_params"] = start["n_params"]
print(json.dumps(row))
PY
    done
done
/usr/bin/python3 - "$res" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| shape | 1 process x 2 threads tok/s | 2 processes x 1 thread tok/s | ratio | allreduce per step (2 processes) | step (1 process) |")
print("|---|---|---|---|---|---|")
model = {}
for shape in ("a", "b"):
    r = [x for x in rows if x["shape"] == shape]
    med = lambda k: statistics.median(x[k] for x in r)
    print("| (%s) | %.0f | %.0f | %.2f | %.2f ms | %.1f ms |" % (
        shape, med("1x2_tok_s"), med("2x1_tok_s"), med("2x1_tok_s") / med("1x2_tok_s"),
        med("2x1_comm_ms"), med("1x2_step_ms")))
    model[shape] = (r[0]["n_params"] * 4, med("1x2_step_ms") / 1e3, med("1x2_tok_s"))
print()
print("Ring allreduce on paper (weak scaling: every process keeps its batch and this machine's "
      "step time; latency 5 us per message; no overlap with backward):")
print("(efficiency = compute / (compute + allreduce); \"even at\": the tokens per process and step at "
      "which the allreduce takes as long as the step's compute at this machine's rate)")
print("| shape | gradient | processes | 10 Gbit/s: allreduce / efficiency / even at | 100 Gbit/s: allreduce / efficiency / even at |")
print("|---|---|---|---|---|")
for shape, (nbytes, t_step, tok_s) in model.items():
    for W in (8, 64, 512):
        cells = []
        for gbit in (10, 100):
            t = 2 * (W - 1) / W * nbytes / (gbit * 1e9 / 8) + 2 * (W - 1) * 5e-6
            cells.append("%.1f ms / %.0f %% / %.0f tokens" % (1e3 * t, 100 * t_step / (t_step + t),
                                                             t * tok_s))
        print("| (%s) | %.1f MB | %d | %s | %s |" % (shape, nbytes / 1e6, W, cells[0], cells[1]))
PY
