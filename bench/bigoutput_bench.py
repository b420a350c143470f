#!/usr/bin/env python3
"""Memory of a large output: the peak RSS of realising a derivation whose
output is one SIZE GiB file (sparse: the disk holds none of it), by cbuild
and by Nix (`nix-build`, sandbox on), in one run, beside the same build
with a 1 MiB output (the floor: what the process needs anyway).

  bench/bigoutput_bench.py [--gib 10] [--runs 1] [--cbuild PATH] [--no-nix]

cbuild reads an output in 1 MiB windows to hash it (modulo its own path)
and scan it for references (issue 19): its peak RSS must not grow with
the output. Before, a 2 GiB output cost 2.1 GB of RSS.
"""
import argparse, os, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, remove_tree, run, summary
from cutoff_bench import nix_with_host_compiler

RECIPE = """let truncate = host_tool("truncate") in {{
  big = derivation {{ name = "big", build_inputs = [truncate],
                      script = "truncate -s {gib}G $out # {salt}" }},
  small = derivation {{ name = "small", build_inputs = [truncate],
                        script = "truncate -s 1M $out # {salt}" }},
}}
"""

NIX = """{{
  big = derivation {{ name = "big"; system = "x86_64-linux"; builder = "/bin/sh";
    PATH = "/usr/bin:/bin"; args = [ "-c" "truncate -s {gib}G $out # {salt}" ]; }};
  small = derivation {{ name = "small"; system = "x86_64-linux"; builder = "/bin/sh";
    PATH = "/usr/bin:/bin"; args = [ "-c" "truncate -s 1M $out # {salt}" ]; }};
}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    a = ap.parse_args()
    env = None if a.no_nix else nix_with_host_compiler()
    work = tempfile.mkdtemp(prefix="cbuild-bigoutput-bench-")
    try:
        rows = {}
        for k in range(a.runs):
            salt = f"{os.getpid()}-{k}"
            with open(os.path.join(work, "recipe.cb"), "w") as f:
                f.write(RECIPE.format(gib=a.gib, salt=salt))
            with open(os.path.join(work, "big.nix"), "w") as f:
                f.write(NIX.format(gib=a.gib, salt=salt))
            store = os.path.join(work, f"store-{k}")
            for attr in ("small", "big"):
                w, rss, _ = run([a.cbuild, "--store", store, "realise", "recipe.cb", "-A", attr],
                                cwd=work)
                rows.setdefault(f"cbuild {attr}", ([], []))
                rows[f"cbuild {attr}"][0].append(w)
                rows[f"cbuild {attr}"][1].append(rss)
                if env is not None:
                    try:
                        w, rss, _ = run(["nix-build", "--no-out-link", "big.nix", "-A", attr],
                                        env=env, cwd=work, check=False)
                    except RuntimeError as e:
                        print(f"nix-build failed: {str(e)[-300:]}", flush=True)
                        env = None
                        continue
                    rows.setdefault(f"nix {attr}", ([], []))
                    rows[f"nix {attr}"][0].append(w)
                    rows[f"nix {attr}"][1].append(rss)
            # Nix's store keeps the output (sparse): collect it.
            if env is not None:
                run(["nix-collect-garbage"], env=env, check=False)
        for tool in ("cbuild", "nix"):
            if f"{tool} big" not in rows:
                continue
            small = max(rows[f"{tool} small"][1])
            big = max(rows[f"{tool} big"][1])
            summary(f"{tool} realise of a 1 MiB output", rows[f"{tool} small"][0],
                    rss=rows[f"{tool} small"][1])
            summary(f"{tool} realise of a {a.gib} GiB output", rows[f"{tool} big"][0],
                    rss=rows[f"{tool} big"][1])
            print(f"{tool}: a {a.gib} GiB output adds {big - small:.0f} MiB of peak RSS "
                  f"({big:.0f} against {small:.0f} MiB)", flush=True)
        if "nix big" not in rows:
            print("nix not available or --no-nix: no comparison", flush=True)
    finally:
        remove_tree(work)


if __name__ == "__main__":
    main()
