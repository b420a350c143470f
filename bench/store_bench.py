#!/usr/bin/env python3
"""Store benchmark: garbage collection and verification, side by side with
Nix (daemonless Nix 2.8, each in a store of its own) in one run.

  bench/store_bench.py [--dead 40000] [--verify-mb 500] [--runs 3] [--cbuild PATH] [--no-nix]

Cases (issue 11):
  gc      DEAD small files imported as DEAD store paths (`cbuild store add`,
          `nix-store --add`), none of them rooted, then collected
          (`cbuild gc`, `nix-store --gc`). Target: at least 10x faster.
  verify  a tree of VERIFY_MB MB (1 MiB files of random bytes) imported
          into each store, then every object re-hashed (`cbuild store
          verify`, `nix-store --verify --check-contents`). Target: at least
          2x faster; also compared with b3sum (BLAKE3) over the same files.
Medians of RUNS interleaved runs; the imports are not timed.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
from common import DEFAULT_CBUILD, nix_env, run, summary


def add_many(cmd, paths, env, cwd):
    """Runs `cmd PATH...` over `paths` in batches under ARG_MAX."""
    for i in range(0, len(paths), 4000):
        subprocess.run(cmd + paths[i:i + 4000], env=env, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL)


def timed(cmd, env, cwd=None):
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    wall = time.perf_counter() - t
    common.timed_cpu(before, wall)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{p.stderr[-2000:]}")
    return wall, p.stdout + p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dead", type=int, default=40000)
    ap.add_argument("--verify-mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    a = ap.parse_args()
    nix = None if a.no_nix else nix_env()
    if nix is None and not a.no_nix:
        print("nix-store not found (Debian: apt-get install nix-bin): cbuild only", flush=True)
    work = tempfile.mkdtemp(prefix="cbuild-store-bench-")
    try:
        files = os.path.join(work, "files")
        os.makedirs(files)
        names = []
        for i in range(a.dead):
            n = f"f{i:06d}"
            with open(os.path.join(files, n), "w") as f:
                f.write(f"dead path {i}\n")
            names.append(n)
        cb_env = dict(os.environ, CBUILD_STORE=os.path.join(work, "cb-gc"))
        nix_gc_store = os.path.join(work, "nix-gc")
        cb_gc, nix_gc, floor = [], [], []
        freed = {}
        for _ in range(a.runs):
            add_many([a.cbuild, "store", "add"], names, cb_env, files)
            w, out = timed([a.cbuild, "gc", "--json"], cb_env)
            cb_gc.append(w)
            import json
            freed["cbuild"] = len(json.loads(out[:out.rindex("}") + 1])["deleted"])
            if nix:
                add_many(["nix-store", "--store", nix_gc_store, "--add"], names, nix, files)
                w, out = timed(["nix-store", "--store", nix_gc_store, "--gc"], nix)
                nix_gc.append(w)
                freed["nix"] = next((l for l in out.splitlines() if "store paths deleted" in l), "?")
            # The floor: the file system's own cost of unlinking that many
            # files (`rm -rf` of a copy).
            copy = os.path.join(work, "floor")
            shutil.copytree(files, copy)
            subprocess.run(["sync"])
            w, _ = timed(["rm", "-rf", copy], None)
            floor.append(w)
        print(f"gc: cbuild deleted {freed.get('cbuild')} paths; nix: {freed.get('nix', '-')}",
              flush=True)
        m_cb = summary(f"cbuild gc, {a.dead} dead paths", cb_gc)
        m_floor = summary(f"rm -rf of {a.dead} files (the file system's floor)", floor)
        print(f"  cbuild gc takes {m_cb / m_floor:.2f}x the floor", flush=True)
        if nix:
            m_nix = summary(f"nix-store --gc, {a.dead} dead paths", nix_gc)
            print(f"gc ratio (nix / cbuild): {m_nix / m_cb:.1f}x "
                  f"(target: at least 10x; nix takes {m_nix / m_floor:.1f}x the floor)", flush=True)
        shutil.rmtree(files)

        tree = os.path.join(work, "tree")
        for d in range(max(a.verify_mb // 50, 1)):
            os.makedirs(os.path.join(tree, f"d{d}"))
        for i in range(a.verify_mb):
            with open(os.path.join(tree, f"d{i % max(a.verify_mb // 50, 1)}", f"f{i}"), "wb") as f:
                f.write(os.urandom(1 << 20))
        cb_env = dict(os.environ, CBUILD_STORE=os.path.join(work, "cb-verify"))
        run([a.cbuild, "store", "add", tree], env=cb_env)
        nix_v_store = os.path.join(work, "nix-verify")
        if nix:
            run(["nix-store", "--store", nix_v_store, "--add", tree], env=nix)
        cb_v, nix_v, b3 = [], [], []
        all_files = [os.path.join(r, f) for r, _, fs in os.walk(tree) for f in fs]
        for _ in range(a.runs):
            w, _ = timed([a.cbuild, "store", "verify"], cb_env)
            cb_v.append(w)
            if nix:
                w, _ = timed(["nix-store", "--store", nix_v_store, "--verify", "--check-contents"],
                             nix)
                nix_v.append(w)
            if shutil.which("b3sum"):
                w, _ = timed(["b3sum", "--num-threads", str(os.cpu_count() or 1)] + all_files, None)
                b3.append(w)
        mb = a.verify_mb * 1.048576
        m_cb = summary(f"cbuild store verify, {a.verify_mb} MiB", cb_v)
        print(f"  {mb / m_cb:.0f} MB/s", flush=True)
        if b3:
            m_b3 = summary(f"b3sum over the same files (BLAKE3 baseline, all cores)", b3)
            print(f"  {mb / m_b3:.0f} MB/s; cbuild verify runs at {m_b3 / m_cb * 100:.0f}% of it",
                  flush=True)
        if nix:
            m_nix = summary(f"nix-store --verify --check-contents, {a.verify_mb} MiB", nix_v)
            print(f"  {mb / m_nix:.0f} MB/s; ratio (nix / cbuild): {m_nix / m_cb:.1f}x "
                  f"(target: at least 2x)", flush=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
