#!/usr/bin/env python3
"""Variable Assignment, the synthetic task of Selective Attention (spec
../shared/papers/selective-attention.md section 9), as byte text for mnemo.

An example assigns digits to single-letter variables, with reassignments, and ends with a
query for one variable that was assigned; the answer is its last value:

    k=3;b=7;k=1;q=0;b=2;k=?1

Older assignments of the queried variable (and every assignment of the others) are
irrelevant: a model that can forget them needs a handful of entries, not the whole history.

    varassign.py train OUT.txt --bytes N [--seed S]   training stream, one example per line
    varassign.py tasks OUT.jsonl --n N [--seed S]     evaluation tasks for `mnemo answer`
    (both take --min_vars, --max_vars, --min_assign, --max_assign; train also --query_frac)

Per example (the spec's defaults, scaled to fit a context of 256 bytes): V in 3..10 variables
drawn from a-z, values 0-9, A drawn in 8..40 (uniform) and max(A, V) assignments, every
variable assigned at least once, in random order. Training examples also carry queries in the middle ("k=?1;", one statement
in four), so that every example teaches the task several times; evaluation tasks have only the
final query, whose answer is the task's answer. Groups: the number of assignments.
"""
import argparse
import json
import random
import string

MIN_ASSIGN, MAX_ASSIGN = 8, 40
MIN_VARS, MAX_VARS = 3, 10
QUERY_FRAC = 0.25


def example(rng, with_queries, a):
    """(text before the answer, answer, number of assignments): the statements, then 'x=?'."""
    names = rng.sample(string.ascii_lowercase, rng.randint(a.min_vars, a.max_vars))
    n_assign = rng.randint(a.min_assign, a.max_assign)  # below len(names): one each, no more
    value = {}
    parts = []
    order = names + [rng.choice(names) for _ in range(n_assign - len(names))]
    rng.shuffle(order)
    for i, v in enumerate(order):
        if with_queries and value and rng.random() < a.query_frac:
            q = rng.choice(sorted(value))
            parts.append(f"{q}=?{value[q]};")
        value[v] = rng.randrange(10)
        parts.append(f"{v}={value[v]};")
    q = rng.choice(sorted(value))
    return "".join(parts) + f"{q}=?", str(value[q]), len(order)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "tasks"])
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int, default=4_000_000, help="train: bytes of text")
    ap.add_argument("--n", type=int, default=1000, help="tasks: how many")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min_vars", type=int, default=MIN_VARS)
    ap.add_argument("--max_vars", type=int, default=MAX_VARS)
    ap.add_argument("--min_assign", type=int, default=MIN_ASSIGN)
    ap.add_argument("--max_assign", type=int, default=MAX_ASSIGN)
    ap.add_argument("--query_frac", type=float, default=QUERY_FRAC, help="train: queries per statement")
    a = ap.parse_args()
    if not (1 <= a.min_vars <= a.max_vars <= 26 and 1 <= a.min_assign and
            a.min_assign + 2 <= a.max_assign and 0 <= a.query_frac < 1):
        ap.error("need 1 <= min_vars <= max_vars <= 26, 1 <= min_assign <= max_assign - 2 "
                 "(three length groups), 0 <= query_frac < 1")
    groups = [(a.min_assign + i * (a.max_assign - a.min_assign + 1) // 3,
               a.min_assign + (i + 1) * (a.max_assign - a.min_assign + 1) // 3 - 1) for i in range(3)]
    if (a.min_assign, a.max_assign) == (MIN_ASSIGN, MAX_ASSIGN):
        groups = [(8, 15), (16, 27), (28, 40)]
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        if a.what == "train":
            written = 0
            while written < a.bytes:
                text, ans, _ = example(rng, True, a)
                line = text + ans + "\n"
                f.write(line)
                written += len(line)
        else:
            for _ in range(a.n):
                text, ans, n_assign = example(rng, False, a)
                lo, hi = next((g for g in groups if g[0] <= n_assign <= g[1]), groups[-1])
                f.write(json.dumps({"prompt": text, "answer": ans,
                                    "group": f"{lo:02d}-{hi:02d} assignments"}) + "\n")


if __name__ == "__main__":
    main()
