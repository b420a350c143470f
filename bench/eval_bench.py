#!/usr/bin/env python3
"""Evaluation benchmark: `cbuild eval` on a generated 5 MB recipe.

Usage: bench/eval_bench.py [--cbuild PATH] [--bytes N] [--runs N]

Prints the median wall time and peak RSS over several runs. Targets (issue
3): < 0.5 s and < 200 MB on the 5 MB recipe. CI runs it at smoke size.
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import run, summary  # noqa: E402


def run_once(cmd):
    wall, rss, _ = run(cmd)
    return wall, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cbuild", default=os.path.join(HERE, "..", "target", "release", "cbuild"))
    ap.add_argument("--bytes", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--max-seconds", type=float, default=None, help="fail if the median is slower")
    ap.add_argument("--max-mib", type=float, default=None, help="fail if the peak RSS is larger")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        recipe = os.path.join(d, "big.cb")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_eval_recipe.py"), recipe, str(a.bytes)], check=True)
        size = os.path.getsize(recipe)
        cmd = [a.cbuild, "eval", recipe]
        run_once(cmd)  # warm the page cache
        walls, rss = [], []
        for _ in range(a.runs):
            w, m = run_once(cmd)
            walls.append(w)
            rss.append(m)
        med = summary(f"cbuild eval, {size / 1e6:.1f} MB recipe", walls, rss=rss)
        if a.max_seconds is not None and med > a.max_seconds:
            sys.exit(f"median {med:.3f} s exceeds {a.max_seconds} s")
        if a.max_mib is not None and max(rss) > a.max_mib:
            sys.exit(f"peak RSS {max(rss):.0f} MiB exceeds {a.max_mib} MiB")


if __name__ == "__main__":
    main()
