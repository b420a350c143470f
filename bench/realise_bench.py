#!/usr/bin/env python3
"""Realise benchmark: N trivial derivations (`echo x > $out`), built cold in
a sandbox, by cbuild and by Nix's `nix-store -r`, interleaved in one run.

  bench/realise_bench.py [--nodes 300] [--runs 5] [--jobs 2] [--shape dag|chain|fan]
                         [--noop-nodes 10000] [--cbuild PATH] [--no-nix]

Shapes: `dag` is the instantiation benchmark's (node i depends on i-1 and
i/2), `chain` a plain chain, `fan` N independent derivations. Each cold run
uses a fresh salt, so every derivation is new; evaluation is done before
the clock starts, for both tools. Prints medians, per-derivation cost and the
ratio. Then times a no-op realise of a `--noop-nodes` DAG whose outputs are
all present. Targets (issue 5): per-derivation cost at least 3x lower than
Nix's; no-op realise of 10,000 derivations under 300 ms. CI runs it at
smoke size.
"""
import argparse, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, nix_env, run, summary


def deps_of(shape, i):
    if shape == "fan" or i == 0:
        return []
    if shape == "chain":
        return [i - 1]
    return sorted({i - 1, i // 2})


def script(mention):
    # With --mention each output names its inputs' paths, as libraries and
    # programs with RPATHs do: the input closure of node i grows with i.
    return "echo x $deps > $out" if mention else "echo x > $out"


def gen_cb(shape, n, salt, mention=False):
    lines = [f"# generated: {n} derivations, shape {shape}", "let",
             f'  salt = "{salt}",',
             '  sh = host_tool("sh"),',
             "  mk = fn(name, deps) => derivation {",
             f'    name = name, builder = sh, args = ["-c", "{script(mention)}"],',
             '    env = { salt = salt, deps = join(" ", deps) },',
             "  },"]
    for i in range(n):
        deps = ", ".join(f"d{j}" for j in deps_of(shape, i))
        lines.append(f'  d{i} = mk("d{i}", [{deps}]),')
    if shape == "fan":
        lines.append("in { " + ", ".join(f"d{i} = d{i}" for i in range(n)) + " }")
    else:
        lines.append(f"in d{n - 1}")
    return "\n".join(lines) + "\n"


def gen_nix(shape, n, mention=False):
    lines = [f"# generated: {n} derivations, shape {shape}", '{ salt ? "" }:', "let",
             "  mk = name: deps: derivation {", "    inherit name salt deps;",
             '    system = "x86_64-linux";', '    builder = "/bin/sh";',
             f'    args = [ "-c" "{script(mention)}" ];', "  };"]
    for i in range(n):
        deps = " ".join(f"d{j}" for j in deps_of(shape, i))
        lines.append(f'  d{i} = mk "d{i}" [ {deps} ];')
    if shape == "fan":
        lines.append("in [ " + " ".join(f"d{i}" for i in range(n)) + " ]")
    else:
        lines.append(f"in d{n - 1}")
    return "\n".join(lines) + "\n"


def cbuild_targets(shape, n):
    return [a for i in range(n) for a in ("-A", f"d{i}")] if shape == "fan" else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--shape", choices=["dag", "chain", "fan"], default="dag")
    ap.add_argument("--noop-nodes", type=int, default=10000)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    ap.add_argument("--mention", action="store_true",
                    help="outputs name their inputs' paths (deep closures)")
    a = ap.parse_args()
    n, shape, j = a.nodes, a.shape, str(a.jobs)
    env = None if a.no_nix else nix_env()
    work = tempfile.mkdtemp(prefix="cbuild-realise-bench-")
    try:
        store = os.path.join(work, "store")
        what = ", outputs name their inputs" if a.mention else ""
        if n:
            print(f"{n} trivial derivations, shape {shape}, -j {j}, sandboxed{what}", flush=True)
        cb, nx = [], []
        for k in range(a.runs if n else 0):
            salt = f"realise-{os.getpid()}-{k}"
            recipe = os.path.join(work, f"r{k}.cb")
            with open(recipe, "w") as f:
                f.write(gen_cb(shape, n, salt, a.mention))
            targets = cbuild_targets(shape, n)
            # A fresh store each run: cold, with evaluation outside the clock.
            s = f"{store}-{k}"
            run([a.cbuild, "--store", s, "eval", recipe] + targets)
            w, _, out = run([a.cbuild, "--store", s, "-j", j, "realise", "--json", recipe] + targets,
                            stdout=subprocess.PIPE)
            if out.count('"built"') != 1:
                sys.exit("cbuild realise printed no JSON result")
            cb.append(w)
            if env is not None:
                nix_file = os.path.join(work, f"r{k}.nix")
                with open(nix_file, "w") as f:
                    f.write(gen_nix(shape, n, a.mention))
                _, _, drvs = run(["nix-instantiate", nix_file, "--argstr", "salt", salt], env=env,
                                 stdout=subprocess.PIPE)
                try:
                    w, _, _ = run(["nix-store", "--realise", "-j", j, "--option", "sandbox", "true"]
                                  + drvs.split(), env=env, check=False)
                except RuntimeError as e:
                    # Nix's sandbox needs /bin/sh bound in (busybox): without
                    # it every build fails, and there is nothing to compare.
                    print(f"nix-store --realise failed, no comparison: {str(e)[-300:]}", flush=True)
                    env = None
                    nx = []
                    continue
                nx.append(w)
        # The floor: the same builder processes started bare, no sandbox and
        # no store, as many at once as -j.
        floor = []
        for k in range(a.runs if n else 0):
            d = os.path.join(work, f"bare-{k}")
            os.mkdir(d)
            body = "echo x $0 > " + d + "/$0"
            w, _, _ = run(["sh", "-c", f"seq {n} | xargs -P {j} -I N sh -c '{body}' N"])
            floor.append(w)
        if n:
            f = summary("bare processes (no sandbox, no store)", floor, per=n)
            c = summary("cbuild realise, cold", cb, per=n)
            print(f"cbuild is {(c - f) * 1e6 / n:.0f} us/drv above the floor", flush=True)
        if nx:
            x = summary("nix-store --realise, cold, sandbox = true", nx, per=n)
            print(f"ratio: cbuild's per-derivation cost is {x / c:.1f}x lower than Nix's", flush=True)
        elif n:
            print("nix-store not found (apt-get install nix-bin) or --no-nix: no comparison", flush=True)

        # No-op: a big DAG whose outputs all exist.
        m = a.noop_nodes
        if not m:
            return
        big = os.path.join(work, "big.cb")
        with open(big, "w") as f:
            f.write(gen_cb("dag", m, "noop"))
        bs = f"{store}-noop"
        run([a.cbuild, "--store", bs, "-j", j, "realise", big])
        noop = []
        for _ in range(a.runs):
            w, _, _ = run([a.cbuild, "--store", bs, "-j", j, "realise", big])
            noop.append(w)
        summary(f"cbuild realise, no-op, {m} derivations (eval included)", noop)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
