#!/usr/bin/env python3
"""Source import benchmark: a generated tree of 20,000 files and about 500 MB
(Nix's benchmark tree: 100 directories of 200 files of 0-50,000 random bytes,
one symlink, one executable), imported with `cbuild store add` and with
`nix-store --add`, in one run.

  bench/import_bench.py [--files 20000] [--runs 3] [--cbuild PATH] [--no-nix]

Prints medians for: the first import into an empty store (cold), a second
import of the unchanged tree (warm), and the same for nix-store --add (cold
after `nix-store --delete` of the path). Targets (issue 4): cold >= 3x faster
than nix-store --add, warm >= 10x faster than cold. CI runs it at
--files 400 --runs 2.
"""
import argparse, os, random, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, nix_env, run, summary


def make_tree(root, files):
    rng = random.Random(20240501)
    per_dir = 200
    total = 0
    for d in range((files + per_dir - 1) // per_dir):
        dd = os.path.join(root, f"dir{d:03d}")
        os.makedirs(dd)
        for f in range(min(per_dir, files - d * per_dir)):
            data = rng.randbytes(rng.randint(0, 50000))
            total += len(data)
            with open(os.path.join(dd, f"file{f:03d}.bin"), "wb") as fh:
                fh.write(data)
    os.symlink("dir000/file000.bin", os.path.join(root, "link"))
    os.chmod(os.path.join(root, "dir000", "file001.bin"), 0o755)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cbuild-import-bench-")
    try:
        tree = os.path.join(work, "tree")
        size = make_tree(tree, a.files)
        subprocess.run(["sync"], check=False)
        print(f"tree: {a.files} files, {size / 1e6:.1f} MB", flush=True)
        cold, warm = [], []
        for k in range(a.runs):
            store = os.path.join(work, f"store-{k}")
            w, _, _ = run([a.cbuild, "--store", store, "store", "add", tree])
            cold.append(w)
            w, _, _ = run([a.cbuild, "--store", store, "store", "add", tree])
            warm.append(w)
            subprocess.run(["chmod", "-R", "u+w", store], check=False)
            shutil.rmtree(store, ignore_errors=True)
            subprocess.run(["sync"], check=False)
        c = summary("cbuild store add, cold (empty store)", cold)
        w = summary("cbuild store add, warm (unchanged tree)", warm)
        print(f"ratio: the second import is {c / w:.1f}x faster than the first", flush=True)
        env = None if a.no_nix else nix_env()
        if env is None:
            print("nix-store not found (apt-get install nix-bin): no comparison", flush=True)
            return
        ncold, nwarm = [], []
        for _ in range(a.runs):
            _, _, out = run(["nix-store", "--add", tree], env=env, stdout=subprocess.PIPE)
            subprocess.run(["nix-store", "--delete", out.strip()], env=env, capture_output=True)
            subprocess.run(["sync"], check=False)
            t, _, _ = run(["nix-store", "--add", tree], env=env)
            ncold.append(t)
            t, _, _ = run(["nix-store", "--add", tree], env=env)
            nwarm.append(t)
        nc = summary("nix-store --add, cold (path deleted first)", ncold)
        nw = summary("nix-store --add, warm (path valid)", nwarm)
        print(f"ratio cold: cbuild is {nc / c:.1f}x faster than nix-store --add; warm: {nw / w:.1f}x", flush=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
