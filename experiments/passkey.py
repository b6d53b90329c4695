#!/usr/bin/env python3
"""Pass-key retrieval in the format of the Infini-attention paper (App. B; spec
../shared/papers/infini-attention.md section 6.2), as byte text for mnemo.

    There is an important info hidden inside a lot of irrelevant text. Find it and memorize
    them. I will quiz you about the important information there. + FILLER * x + NEEDLE +
    FILLER * y + " What is the pass key? The pass key is"

with FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and
back again." and NEEDLE = " The pass key is KEY. Remember it. KEY is the pass key."; the
answer is " KEY" (KEY a random 5-digit number). The prompt's length in bytes (= tokens for
the byte tokenizer) is the requested length rounded down to whole fillers; x / (x + y) is the
depth: start 0, middle 0.5, end 1 (the needle right before the question).

    passkey.py tasks OUT.jsonl [--lengths 1024,4096,...] [--depths start,middle,end] [--n 10]
                     [--len_jitter J]
    passkey.py train OUT.txt --bytes N [--max_len 4096] [--min_len 256] [--window T]
                     [--edge_frac F] [--jitter N [--boundary_frac F]]
    passkey.py score ANSWERS.jsonl --model NAME      (appends nothing; prints JSON Lines)

`tasks` writes JSON Lines for `mnemo answer` (group "LENGTH depth"; with --len_jitter J each
prompt is asked for 0 to min(J, LENGTH / 2) - 1 bytes fewer, uniformly, so that the prompts of a
cell meet a model's segments at different alignments); `train` writes a stream of
whole examples (prompt + answer, one per line) of random lengths and depths -- with --window T
each line is padded with spaces after the answer to exactly T bytes with its newline, so that a
training window of T tokens started at a line (mnemo train --doc_windows) holds exactly one
example and never the next one's pass key; with --jitter N each line starts with 0 to N - 1
spaces, so that the example meets a model's segments of N at every alignment, and with
--boundary_frac F a fraction F of the lines have as many as put a segment boundary (a position
that is a multiple of N, the window's BOS at position 0) inside the needle or inside the
answer or the five bytes before it (half each; the cases where local attention alone cannot
place the digits); `score` reads the
results of `mnemo answer --out` and prints one line per (length, depth): exact-match accuracy
(all five digits), digit accuracy (the fraction of the key's digits produced in place, the
spec's reading of the paper's "token-level retrieval accuracy"), and -- to tell retrieving the
key's digits from putting them in order -- the fraction of the key's digits that the answer
holds in any order (multiset overlap), and how many prompts were cut to the model's context
(`mnemo answer` marks them: the session could not hold the whole prompt).
"""
import argparse
import json
import random
from collections import Counter

PREFIX = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
          "memorize them. I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = " What is the pass key? The pass key is"
DEPTHS = {"start": 0.0, "middle": 0.5, "end": 1.0}


def needle(key):
    return f" The pass key is {key}. Remember it. {key} is the pass key."


def example(rng, length, depth):
    """(prompt, answer) of at most `length` bytes (at least the fixed parts)."""
    key = rng.randrange(10000, 100000)
    fixed = len(PREFIX) + len(needle(key)) + len(QUESTION)
    n_fill = max(0, (length - fixed) // len(FILLER))
    x = round(depth * n_fill)
    prompt = PREFIX + FILLER * x + needle(key) + FILLER * (n_fill - x) + QUESTION
    return prompt, f" {key}"


def jitter(rng, prompt, ans, n, boundary_frac):
    """Leading spaces for a training line: uniform in [0, n), or (with probability
    boundary_frac) as many as put a multiple of n at a chosen position: one inside the needle,
    or one from five bytes before the answer to its last digit. Byte i of the line sits at
    position i + 1 of its window (BOS first)."""
    if rng.random() >= boundary_frac:
        return rng.randrange(n)
    if rng.random() < 0.5:
        start = prompt.find(" The pass key is ")
        byte = rng.randrange(start, start + len(needle(ans.strip())))
    else:
        byte = rng.randrange(len(prompt) - 5, len(prompt) + len(ans))
    return -(byte + 1) % n


def score(path, model):
    cells = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            length, depth = r["group"].split()
            c = cells.setdefault((int(length), depth), [0, 0, 0, 0, 0, 0])
            want, got = r["answer"].strip(), r["got"].strip()
            c[0] += r["correct"]
            c[1] += 1
            c[2] += sum(a == b for a, b in zip(want, got))
            c[3] += len(want)
            c[4] += sum((Counter(want) & Counter(got)).values())
            c[5] += r.get("cut", False)
    order = {d: i for i, d in enumerate(DEPTHS)}
    for (length, depth), (right, n, digits, total, bag, cut) in sorted(
            cells.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        print(json.dumps({"model": model, "length": length, "depth": depth, "n": n,
                          "accuracy": right / n, "digit_accuracy": digits / total,
                          "digits_any_order": bag / total, "n_cut": cut}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tasks", "train", "score"])
    ap.add_argument("out")
    ap.add_argument("--lengths", default="1024,4096,16384,65536,262144,1048576",
                    help="tasks: prompt lengths in bytes")
    ap.add_argument("--depths", default="start,middle,end", help="tasks: needle depths")
    ap.add_argument("--n", type=int, default=10, help="tasks: per length and depth")
    ap.add_argument("--len_jitter", type=int, default=0, metavar="J",
                    help="tasks: shorten each prompt by 0 to min(J, length/2)-1 bytes (0 = exact lengths)")
    ap.add_argument("--bytes", type=int, default=8_000_000, help="train: bytes of text")
    ap.add_argument("--min_len", type=int, default=256, help="train: shortest example")
    ap.add_argument("--max_len", type=int, default=4096, help="train: longest example")
    ap.add_argument("--window", type=int, default=0,
                    help="train: pad each line to this many bytes (0 = no padding); >= max_len + 7")
    ap.add_argument("--edge_frac", type=float, default=0.0,
                    help="train: fraction of examples with the needle exactly at the start or the "
                         "end (half each); the rest at a uniform depth")
    ap.add_argument("--jitter", type=int, default=0, metavar="N",
                    help="train: start each line with 0 to N-1 spaces (0 = none)")
    ap.add_argument("--boundary_frac", type=float, default=0.0,
                    help="train, with --jitter N: fraction of lines whose spaces put a multiple "
                         "of N inside the needle or at the answer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="model", help="score: the model's name in the output")
    a = ap.parse_args()
    if a.what == "score":
        score(a.out, a.model)
        return
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        if a.what == "tasks":
            depths = a.depths.split(",")
            bad = [d for d in depths if d not in DEPTHS]
            if bad:
                ap.error("unknown depth %s (choose from %s)" % (bad[0], ",".join(DEPTHS)))
            for length in (int(s) for s in a.lengths.split(",")):
                for d in depths:
                    for _ in range(a.n):
                        cut = rng.randrange(min(a.len_jitter, length // 2)) if a.len_jitter > 0 else 0
                        prompt, ans = example(rng, length - cut, DEPTHS[d])
                        f.write(json.dumps({"prompt": prompt, "answer": ans,
                                            "group": "%d %s" % (length, d)}) + "\n")
        else:
            if a.jitter < 0 or not 0 <= a.boundary_frac <= 1 or (a.boundary_frac and not a.jitter):
                ap.error("--jitter must be >= 0, and --boundary_frac in [0, 1] with --jitter")
            room = a.max_len + 7 + max(a.jitter - 1, 0)
            if a.window and a.window < room:
                ap.error("--window %d: must hold the longest example, its answer and the jitter "
                         "(>= %d)" % (a.window, room))
            written = 0
            while written < a.bytes:
                length = rng.randint(a.min_len, a.max_len)
                if a.edge_frac and rng.random() < a.edge_frac:
                    depth = float(rng.random() < 0.5)
                else:
                    depth = rng.random()
                prompt, ans = example(rng, length, depth)
                line = prompt + ans
                if a.jitter:
                    line = " " * jitter(rng, prompt, ans, a.jitter, a.boundary_frac) + line
                if a.window:
                    line += " " * (a.window - 1 - len(line))
                f.write(line + "\n")
                written += len(line) + 1


if __name__ == "__main__":
    main()
