#!/usr/bin/env python3
"""Check benchmark: `cbuild check` of a deterministic derivation (a chain of
C compiles, the cutoff benchmark's, its top checked) against `nix-build
--check` of the same chain, in one run.

  bench/check_bench.py [--depth 5] [--runs 3] [--cbuild PATH] [--no-nix]

Both rebuild the checked derivation once in the sandbox, with its inputs from
the store, and compare the result with what is stored.
"""
import argparse, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, run, summary
from cutoff_bench import lay_chain, nix_with_host_compiler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    a = ap.parse_args()
    env = None if a.no_nix else nix_with_host_compiler()
    work = tempfile.mkdtemp(prefix="cbuild-check-bench-")
    try:
        store, env = lay_chain(work, a.depth, f"check {os.getpid()}", a.cbuild, env)
        cb, nx = [], []
        for _ in range(a.runs):
            w, _, _ = run([a.cbuild, "--store", store, "check", "recipe.cb"], cwd=work)
            cb.append(w)
            if env is not None:
                w, _, _ = run(["nix-build", "--no-out-link", "--check", "chain.nix"], env=env,
                              cwd=work)
                nx.append(w)
        c = summary("cbuild check of one C compile (a rebuild and a compare)", cb)
        if nx:
            x = summary("nix-build --check of the same", nx)
            print(f"ratio: cbuild check is {x / c:.1f}x faster", flush=True)
        else:
            print("nix-build not available or --no-nix: no comparison", flush=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
