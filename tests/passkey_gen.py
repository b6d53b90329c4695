#!/usr/bin/env python3
"""Checks of the pass-key generator (experiments/passkey.py): the paper's format, the lengths
and depths asked for (exact, or shortened by --len_jitter), training lines padded to the
window, and the leading spaces of --jitter / --boundary_frac putting a segment boundary where
they say; the scorer's cells. Fails with a message on the first wrong property."""
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "experiments", "passkey.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import passkey  # noqa: E402


def check(cond, what):
    if not cond:
        sys.exit("passkey_gen: " + what)


def boundary_in(pos_from, pos_to, n):
    """Is a multiple of n among the window positions pos_from..pos_to?"""
    return (pos_to // n) * n >= pos_from


def main():
    rng = random.Random(5)
    for length in (300, 1024, 4096):
        for depth, frac in passkey.DEPTHS.items():
            prompt, ans = passkey.example(rng, length, frac)
            key = ans.strip()
            check(len(prompt) <= length and len(prompt) > length - len(passkey.FILLER),
                  "prompt of %d bytes for length %d" % (len(prompt), length))
            check(prompt.startswith(passkey.PREFIX) and prompt.endswith(passkey.QUESTION),
                  "prefix or question missing")
            check(len(key) == 5 and key.isdigit() and prompt.count(key) == 2, "key %r" % key)
            at = prompt.find(passkey.needle(key))
            before, after = prompt[len(passkey.PREFIX):at], prompt[at + len(passkey.needle(key)):]
            x, y = before.count(passkey.FILLER), after.count(passkey.FILLER)
            check(x == round(frac * (x + y)), "%s: %d fillers before, %d after" % (depth, x, y))

    n, window = 512, 2048
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "tasks.jsonl")
        subprocess.run([sys.executable, SCRIPT, "tasks", out, "--lengths", "1024,65536", "--n", "20",
                        "--len_jitter", "2048", "--seed", "4"], check=True)
        sizes = {}
        for line in open(out):
            t = json.loads(line)
            length = int(t["group"].split()[0])
            check(length // 2 - len(passkey.FILLER) < len(t["prompt"]) <= length,
                  "len_jitter: prompt of %d bytes for %d" % (len(t["prompt"]), length))
            sizes.setdefault(length, set()).add(len(t["prompt"]))
        check(all(len(v) > 3 for v in sizes.values()), "len_jitter: lengths %s" % sizes)
        for bfrac in (0.0, 1.0):
            out = os.path.join(d, "t.txt")
            subprocess.run([sys.executable, SCRIPT, "train", out, "--bytes", "400000",
                            "--min_len", "242", "--max_len", "1530", "--window", str(window),
                            "--jitter", str(n), "--boundary_frac", str(bfrac), "--seed", "3"],
                           check=True)
            lines = open(out).read().split("\n")[:-1]
            check(len(lines) > 150, "%d lines" % len(lines))
            spaces, hits = set(), 0
            for line in lines:
                check(len(line) + 1 == window, "line of %d bytes" % (len(line) + 1))
                body = line.lstrip(" ")
                j = len(line) - len(body)
                check(0 <= j < n and body.startswith(passkey.PREFIX), "%d leading spaces" % j)
                spaces.add(j)
                q = line.find(passkey.QUESTION) + len(passkey.QUESTION)  # answer's first byte
                s = line.find(" The pass key is ")
                nlen = len(passkey.needle(line[q + 1:q + 6]))
                # byte i is at window position i + 1
                needle_hit = boundary_in(s + 1, s + nlen, n)
                answer_hit = boundary_in(q - 5 + 1, q + 5 + 1, n)
                hits += needle_hit or answer_hit
            if bfrac:
                check(hits == len(lines), "boundary_frac 1: %d of %d lines with a boundary in "
                      "the needle or at the answer" % (hits, len(lines)))
            else:
                check(len(spaces) > 100, "jitter: only %d distinct offsets" % len(spaces))
                check(hits < 0.5 * len(lines), "boundary_frac 0: %d of %d at a boundary"
                      % (hits, len(lines)))
        bad = subprocess.run([sys.executable, SCRIPT, "train", os.path.join(d, "u.txt"),
                              "--max_len", "2041", "--window", "2048", "--jitter", "512"],
                             capture_output=True, text=True)
        check(bad.returncode != 0 and "--window 2048" in bad.stderr, "window too small accepted")
        # the scorer: per cell exact match, digits in place, digits in any order, prompts cut
        ans = os.path.join(d, "answers.jsonl")
        with open(ans, "w") as f:
            for group, want, got, cut in (("1024 end", " 12345", " 12345", False),
                                          ("1024 end", " 12345", " 54321", True),
                                          ("256 start", " 11111", " 11112", False)):
                f.write(json.dumps({"group": group, "answer": want, "got": got,
                                    "correct": want == got, "cut": cut}) + "\n")
        out = subprocess.run([sys.executable, SCRIPT, "score", ans, "--model", "m"],
                             capture_output=True, text=True, check=True).stdout
        cells = {(r["length"], r["depth"]): r for r in map(json.loads, out.splitlines())}
        check(sorted(cells) == [(256, "start"), (1024, "end")], "score cells %s" % sorted(cells))
        e = cells[(1024, "end")]
        check((e["n"], e["accuracy"], e["digit_accuracy"], e["digits_any_order"], e["n_cut"]) ==
              (2, 0.5, 0.6, 1.0, 1), "score of the 1024 end cell: %s" % e)
        s = cells[(256, "start")]
        check((s["accuracy"], s["digit_accuracy"], s["digits_any_order"], s["n_cut"]) ==
              (0, 0.8, 0.8, 0), "score of the 256 start cell: %s" % s)
    print("passkey_gen: ok")


if __name__ == "__main__":
    main()
