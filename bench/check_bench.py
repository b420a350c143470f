#!/usr/bin/env python3
"""Check benchmark: `cbuild check` of a deterministic derivation (a chain of
C compiles, the cutoff benchmark's, its top checked) against `nix-build
--check` of the same chain, in one run.

  bench/check_bench.py [--depth 5] [--runs 3] [--cbuild PATH] [--no-nix]

Both rebuild the checked derivation once in the sandbox, with its inputs from
the store, and compare the result with what is stored.
"""
import argparse, os, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, remove_tree, run, versus
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
        versus("cbuild check of one C compile (a rebuild and a compare)", cb,
               "nix-build --check of the same", nx, "at checking")
    finally:
        remove_tree(work)


if __name__ == "__main__":
    main()
