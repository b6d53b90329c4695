#!/usr/bin/env bash
# Data-parallel training over MPI (issue 16; docs/internals/training.md s. 11), with the MPI
# build's mnemo: W processes at batch B train what one process trains at batch W x B, to float
# rounding (losses of every step, weights at the end), with AdamW, with Muon + gradient
# accumulation + an average of the weights, with a kind that carries its state (lanes) and
# one with an auxiliary loss; a
# stop asked for on one process stops all of them at a checkpoint and --resume continues to the
# same weights bit for bit; a process killed mid-run ends the run with an error, not a hang,
# and the last checkpoint resumes; processes started with different configs are refused; a
# resume with another number of processes continues with a note. Several hosts: with root and
# iproute2, three network namespaces on a bridge (their own addresses) stand for three machines,
# mpirun starts one process in each through a hostfile (an "ssh" that enters the namespace),
# over TCP only, and the run equals one process's again.
# usage: tests/mpi_test.sh path/to/mnemo (built with -DMNEMO_MPI=ON)
set -uo pipefail
MNEMO=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
fails=0 passes=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { passes=$((passes + 1)); }
# Open MPI as root, more processes than cores, shared memory without ptrace (containers)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_NUM_THREADS=1
MPIRUN=(mpirun -np)

for i in $(seq 1 400); do echo "And God said, Let there be light: and there was light. $i"; done >"$W/text.txt"
"$MNEMO" prepare --out "$W/data" "$W/text.txt" >/dev/null 2>&1 || { echo "FAIL: prepare"; exit 1; }
BASE=(--train "$W/data/train.bin" --val "$W/data/val.bin" --n_layer 2 --d_model 32 --n_head 2
      --n_ctx 32 --warmup 2 --eval_every 5 --eval_windows 6 --threads 1 --seed 3 --print_every 100)

# compare A B TOL [steps]: losses of every step (and of the validations, unless "steps") and
# the final weights of two runs
compare() {
    /usr/bin/python3 - "$1" "$2" "$3" "$HERE/ref" "${4:-}" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[4])
import numpy as np, st_io
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
def recs(d, kind, key):
    return [json.loads(l)[key] for l in open(d + "/log.jsonl") if json.loads(l)["type"] == kind]
for kind, key in (("step", "loss"),) + ((("eval", "val_loss"),) if sys.argv[5] != "steps" else ()):
    x, y = recs(a, kind, key), recs(b, kind, key)
    if len(x) != len(y) or not x:
        sys.exit("%s: %d vs %d records" % (kind, len(x), len(y)))
    d = max(abs(p - q) for p, q in zip(x, y))
    if d > tol:
        sys.exit("%s %s differ by %.3g (tol %g)" % (kind, key, d, tol))
ta, _ = st_io.load(a + "/model.safetensors")
tb, _ = st_io.load(b + "/model.safetensors")
scale = max(float(np.max(np.abs(v))) for v in ta.values())
d = max(float(np.max(np.abs(ta[k] - tb[k]))) for k in ta) / scale
if d > tol:
    sys.exit("weights differ by %.3g of the largest (tol %g)" % (d, tol))
print("equal within %g: %d steps, weights %.2e" % (tol, len(recs(a, "step", "loss")), d))
PY
}

# equal NAME W B EXTRA...: one process at batch W x B, W processes at batch B
equal() {
    local name=$1 np=$2 b=$3
    shift 3
    "$MNEMO" train "${BASE[@]}" --out "$W/$name.1" --batch $((np * b)) "$@" >"$W/$name.1.log" 2>&1 \
        || { bad "$name: one process: $(tail -1 "$W/$name.1.log")"; return; }
    "${MPIRUN[@]}" "$np" "$MNEMO" train "${BASE[@]}" --out "$W/$name.$np" --batch "$b" "$@" \
        >"$W/$name.$np.log" 2>&1 || { bad "$name: $np processes: $(tail -3 "$W/$name.$np.log")"; return; }
    grep -q "^train: $np processes, [0-9]* windows per step in all" "$W/$name.$np.log" \
        || bad "$name: no line on the processes"
    [ "$(grep -c '^step ' "$W/$name.$np.log")" -le 3 ] || bad "$name: progress printed by every process"
    local r
    r=$(compare "$W/$name.1" "$W/$name.$np" 2e-5 2>&1) && { echo "$name: $r"; ok; } || bad "$name: $r"
}

# rank1_of DIR: the pid of rank 1 of the run training into DIR ("" if none)
rank1_of() {
    local p
    for p in $(pgrep -f "mnemo train .*--out $1"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$' && echo "$p"
    done
}
# wait_log DIR PATTERN: until DIR/log.jsonl has a line matching PATTERN (30 s at most)
wait_log() {
    for _ in $(seq 1 600); do
        grep -q "$2" "$1/log.jsonl" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

equal adamw 2 2 --steps 20
equal muon_accum_ema 3 2 --steps 12 --optimizer muon --grad_accum 2 --ema 0.9
equal infini_lanes 2 2 --steps 12 --attn infini --attn_opt segment=8,carry=true
equal selective_aux 2 2 --steps 10 --attn selective --attn_opt mem_eps=0.1

# a stop asked for on one process (SIGINT to rank 1 only) stops the group at a checkpoint;
# --resume then reaches the uninterrupted run's weights bit for bit
R=(--steps 200 --batch 2 --ckpt_every 3 --attn infini --attn_opt segment=8,carry=true)
"${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/straight" "${R[@]}" >"$W/straight.log" 2>&1 \
    || bad "stop: the straight run failed: $(tail -2 "$W/straight.log")"
"${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/stopped" "${R[@]}" >"$W/stopped.log" 2>&1 &
mp=$!
wait_log "$W/stopped" '"step":5,' && rank1=$(rank1_of "$W/stopped") && [ -n "$rank1" ] && kill -INT "$rank1"
wait $mp
rc=$?
stopped_at=$(sed -n 's/.*"type":"checkpoint","step":\([0-9]*\).*/\1/p' "$W/stopped/log.jsonl" | tail -1)
if [ "$rc" -ne 0 ] && [ -n "$stopped_at" ] && [ "$stopped_at" -lt 200 ]; then
    grep -q "^train: interrupted" "$W/stopped.log" || bad "stop: rank 0 did not say the run stopped"
    "${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/stopped" "${R[@]}" --resume \
        >"$W/resumed.log" 2>&1 || bad "stop: the resume failed: $(tail -2 "$W/resumed.log")"
    grep -q "starting at step $stopped_at of 200" "$W/resumed.log" || bad "stop: not resumed at $stopped_at"
    # (the stopped run validated at its stop too)
    r=$(compare "$W/straight" "$W/stopped" 0 steps 2>&1) && { echo "stop at step $stopped_at, resume: $r"; ok; } \
        || bad "stop and resume: $r"
else
    bad "stop: SIGINT to rank 1 did not stop the group at a checkpoint (exit $rc, checkpoint ${stopped_at:-none})"
fi

# a process killed mid-run: the group ends with an error within a minute (no hang); the last
# checkpoint loads and --resume finishes the run
K=(--steps 1000 --batch 4 --ckpt_every 2)
"${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/killed" "${K[@]}" >"$W/killed.log" 2>&1 &
mp=$!
wait_log "$W/killed" '"type":"checkpoint","step":4,'
victim=$(rank1_of "$W/killed")
if [ -n "$victim" ]; then
    kill -9 "$victim"
    for _ in $(seq 1 600); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
    if kill -0 $mp 2>/dev/null; then
        bad "kill: the group still runs a minute after rank 1 was killed"
        pkill -9 -f "mnemo train .*--out $W/killed"
    fi
    wait $mp && bad "kill: mpirun exited 0 after a process was killed" || ok
    last=$(sed -n 's/.*"type":"checkpoint","step":\([0-9]*\).*/\1/p' "$W/killed/log.jsonl" | tail -1)
    [ "${last:-1000}" -lt 1000 ] || bad "kill: the run had finished before the kill"
    echo "kill: rank 1 killed after the checkpoint of step ${last:-?}; the group stopped"
    
    grep -qi "signal 9\|killed" "$W/killed.log" || bad "kill: no line names the killed process"
    "$MNEMO" info "$W/killed/model.safetensors" >/dev/null 2>&1 || bad "kill: the last checkpoint does not load"
    "${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/killed" "${K[@]}" --resume \
        >"$W/killed2.log" 2>&1 && ok \
        || bad "kill: --resume after the kill: $(tail -2 "$W/killed2.log")"
else
    bad "kill: rank 1 not found"
    wait $mp
fi

# a process that hangs (SIGSTOP: the launcher sees nothing wrong) is found by the others'
# deadline (MNEMO_MPI_TIMEOUT): they name the exchange and end the job; the checkpoint resumes
"${MPIRUN[@]}" 2 -x MNEMO_MPI_TIMEOUT=3 "$MNEMO" train "${BASE[@]}" --out "$W/hung" "${K[@]}" \
    >"$W/hung.log" 2>&1 &
mp=$!
wait_log "$W/hung" '"type":"checkpoint","step":4,'
victim=$(rank1_of "$W/hung")
if [ -n "$victim" ]; then
    kill -STOP "$victim"
    t0=$(date +%s)
    for _ in $(seq 1 300); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
    if kill -0 $mp 2>/dev/null; then
        bad "hung: the job still runs 30 s after rank 1 stopped"
        kill -CONT "$victim"
        pkill -9 -f "mnemo train .*--out $W/hung"
    fi
    wait $mp && bad "hung: mpirun exited 0" || ok
    grep -q "^mnemo: MPI: rank 0 waited 3 s in .* for the other processes" "$W/hung.log" \
        && echo "hung: rank 0 ended the job after $(( $(date +%s) - t0 )) s" && ok \
        || bad "hung: no line from rank 0 on the timeout ($(grep -m1 mnemo "$W/hung.log"))"
    "$MNEMO" info "$W/hung/model.safetensors" >/dev/null 2>&1 || bad "hung: the last checkpoint does not load"
else
    bad "hung: rank 1 not found"
    wait $mp
fi

# processes started with different configs are refused, on every process, before training
"${MPIRUN[@]}" 1 "$MNEMO" train "${BASE[@]}" --out "$W/mixed" --batch 2 --steps 4 --lr 0.001 : \
    -np 1 "$MNEMO" train "${BASE[@]}" --out "$W/mixed" --batch 2 --steps 4 --lr 0.002 \
    >"$W/mixed.log" 2>&1 && bad "mixed configs: trained" || ok
grep -q "disagree on the config" "$W/mixed.log" || bad "mixed configs: no clear error ($(tail -1 "$W/mixed.log"))"
[ -e "$W/mixed/model.safetensors" ] && bad "mixed configs: a checkpoint was written"

# another number of processes: the run continues where it stopped, with a note
"${MPIRUN[@]}" 2 "$MNEMO" train "${BASE[@]}" --out "$W/w2" --batch 2 --steps 4 >/dev/null 2>&1 \
    || bad "world change: first run failed"
"$MNEMO" train "${BASE[@]}" --out "$W/w2" --batch 2 --steps 6 --resume >"$W/w2.log" 2>&1 \
    || bad "world change: resume failed: $(tail -1 "$W/w2.log")"
grep -q "^train: note: the run was trained by 2 process(es), now 1" "$W/w2.log" && ok \
    || bad "world change: no note"

# several hosts: network namespaces h1..h3 on a bridge, 10.77.<n>.11-13, one process each
HOSTS_NS=() HOSTS_BR=""
cleanup_hosts() {
    for n in "${HOSTS_NS[@]}"; do ip netns del "$n" 2>/dev/null; done
    [ -z "$HOSTS_BR" ] || ip link del "$HOSTS_BR" 2>/dev/null
    HOSTS_NS=() HOSTS_BR=""
}
hosts_test() {
    local id=$((RANDOM % 200 + 20)) br net i
    br="mnbr$id"
    net="10.77.$id"
    trap 'cleanup_hosts; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
    HOSTS_BR=$br
    ip link add "$br" type bridge && ip addr add "$net.1/24" dev "$br" && ip link set "$br" up || return 1
    for i in 1 2 3; do
        HOSTS_NS+=("mn${id}h$i")
        ip netns add "mn${id}h$i" &&
            ip link add "mn${id}v$i" type veth peer name eth0 netns "mn${id}h$i" &&
            ip link set "mn${id}v$i" master "$br" up &&
            ip netns exec "mn${id}h$i" ip addr add "$net.$((10 + i))/24" dev eth0 &&
            ip netns exec "mn${id}h$i" ip link set eth0 up &&
            ip netns exec "mn${id}h$i" ip link set lo up || return 1
    done
    # the bridge forwards on its ports only once they leave the listening/learning states:
    # wait for that (a first connection in the meantime fails, as a fresh-clone run showed)
    ip link set "$br" type bridge forward_delay 0 2>/dev/null
    for _ in $(seq 1 100); do
        [ "$(bridge link show 2>/dev/null | grep "master $br" | grep -c 'state forwarding')" = 3 ] && break
        sleep 0.1
    done
    # the launcher's "ssh": the last address byte names the namespace
    cat >"$W/netns_rsh" <<RSH
#!/bin/sh
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
exec ip netns exec "mn${id}h\$((\${host##*.} - 10))" /bin/sh -c "\$*"
RSH
    chmod +x "$W/netns_rsh"
    printf '%s slots=1\n' "$net.11" "$net.12" "$net.13" >"$W/hostfile"
    # the launcher starts every daemon itself and each reports straight back to it (no tree of
    # daemons relaying through each other: a fresh-clone run once failed there, with Open MPI
    # suggesting routed=direct)
    mpirun --hostfile "$W/hostfile" -np 3 --mca plm_rsh_agent "$W/netns_rsh" \
        --mca plm_rsh_no_tree_spawn 1 --mca routed direct --mca oob_tcp_if_include "$net.0/24" --mca btl_tcp_if_include "$net.0/24" --mca btl tcp,self \
        "$MNEMO" train "${BASE[@]}" --out "$W/hosts.3" --batch 2 --steps 12 >"$W/hosts.3.log" 2>&1 \
        || { bad "hosts: $(grep -v setpgid "$W/hosts.3.log" | tail -3)"; return 0; }
    "$MNEMO" train "${BASE[@]}" --out "$W/hosts.1" --batch 6 --steps 12 >/dev/null 2>&1 || bad "hosts: one process"
    local r
    r=$(compare "$W/hosts.1" "$W/hosts.3" 2e-5 2>&1) && { echo "3 hosts over TCP: $r"; ok; } || bad "hosts: $r"
}
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns list >/dev/null 2>&1; then
    hosts_test || bad "hosts: could not make the network namespaces (ip netns, veth, bridge)"
    cleanup_hosts
else
    echo "note: the several-hosts test needs root and iproute2 (ip netns): skipped"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
