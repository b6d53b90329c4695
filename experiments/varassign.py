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

Per example (the spec's defaults, scaled to fit a context of 256 bytes): V in 3..10 variables
drawn from a-z, values 0-9, A in 8..40 assignments (uniform), every variable assigned at least
once, in random order. Training examples also carry queries in the middle ("k=?1;", one statement
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
GROUPS = [(8, 15), (16, 27), (28, 40)]


def example(rng, with_queries):
    """(text before the answer, answer): the statements, then 'x=?'."""
    names = rng.sample(string.ascii_lowercase, rng.randint(MIN_VARS, MAX_VARS))
    n_assign = rng.randint(MIN_ASSIGN, MAX_ASSIGN)
    value = {}
    parts = []
    order = names + [rng.choice(names) for _ in range(n_assign - len(names))]
    rng.shuffle(order)
    for i, v in enumerate(order):
        if with_queries and value and rng.random() < QUERY_FRAC:
            q = rng.choice(sorted(value))
            parts.append(f"{q}=?{value[q]};")
        value[v] = rng.randrange(10)
        parts.append(f"{v}={value[v]};")
    q = rng.choice(sorted(value))
    return "".join(parts) + f"{q}=?", str(value[q]), n_assign


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "tasks"])
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int, default=4_000_000, help="train: bytes of text")
    ap.add_argument("--n", type=int, default=1000, help="tasks: how many")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        if a.what == "train":
            written = 0
            while written < a.bytes:
                text, ans, _ = example(rng, True)
                line = text + ans + "\n"
                f.write(line)
                written += len(line)
        else:
            for _ in range(a.n):
                text, ans, n_assign = example(rng, False)
                lo, hi = next(g for g in GROUPS if g[0] <= n_assign <= g[1])
                f.write(json.dumps({"prompt": text, "answer": ans,
                                    "group": f"{lo:02d}-{hi:02d} assignments"}) + "\n")


if __name__ == "__main__":
    main()
