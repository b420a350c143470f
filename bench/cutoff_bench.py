#!/usr/bin/env python3
"""Early cutoff benchmark: a chain of N real C compiles (node k compiles its
own source file and depends on node k-1), realised once; then a comment-only
change to the source at the bottom of the chain (node 0's), and the time to a
finished realise, by cbuild and by Nix (`nix-build`, sandbox on, the host's
compiler bound in), in one run.

  bench/cutoff_bench.py [--depth 50] [--runs 3] [--cbuild PATH] [--no-nix]

cbuild recompiles node 0, finds its output unchanged (the comment leaves the
object code alone) and stops there: the rest of the chain is cached (early
cutoff). Nix's store paths follow their inputs, not their contents, so it
rebuilds the whole chain. Target (issue 13, case 5): the time to a finished
realise after the change, against Nix's.
"""
import argparse, json, os, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, nix_env, remove_tree, run, versus

COMPILE = "cc -O1 -c"


def write_sources(d, depth, comment):
    for k in range(depth):
        with open(os.path.join(d, f"c{k}.c"), "w") as f:
            body = f"int f{k}(int x) {{ return x * {k + 3} + {k}; }}\n"
            # The comment goes into node 0's source only.
            f.write((f"/* {comment} */\n" if k == 0 else "") + body)


def gen_cb(depth):
    lines = ["let", '  cc = host_tool("cc"), cat = host_tool("cat"), cp = host_tool("cp"),']
    for k in range(depth):
        prev = f' ${{n{k - 1}}}' if k else ""
        check = f"cat{prev} > /dev/null; " if k else ""
        # Compiled under a fixed name: the object records the file's name.
        lines.append(f'  n{k} = derivation {{ name = "n{k}", build_inputs = [cc, cat, cp], '
                     f'script = "{check}cp ${{source(./c{k}.c)}} c.c; {COMPILE} c.c -o $out" }},')
    lines.append(f"in n{depth - 1}")
    return "\n".join(lines) + "\n"


def gen_nix(depth):
    lines = ["let"]
    for k in range(depth):
        prev = f" ${{n{k - 1}}}" if k else ""
        check = f"cat{prev} > /dev/null; " if k else ""
        lines.append(f'  n{k} = derivation {{ name = "n{k}"; system = "x86_64-linux"; '
                     f'builder = "/bin/sh"; PATH = "/usr/bin:/bin"; '
                     f'args = [ "-c" "{check}cp ${{./c{k}.c}} c.c; {COMPILE} c.c -o $out" ]; }};')
    lines.append(f"in n{depth - 1}")
    return "\n".join(lines) + "\n"


def nix_with_host_compiler():
    """The Nix peer's environment with the host's compiler inside its
    sandbox (there is no nixpkgs here): its directories bound read-only, as
    cbuild's host tools are. None if Nix is missing."""
    env = nix_env()
    if env is None:
        return None
    conf = os.path.join(env["NIX_CONF_DIR"], "nix.conf")
    with open(conf) as f:
        text = f.read()
    binds = [p for p in ("/usr", "/lib", "/lib64", "/etc/alternatives") if os.path.exists(p)]
    lines = [l for l in text.splitlines() if not l.startswith("sandbox-paths")]
    lines.append("sandbox-paths = /bin/sh=/bin/sh /bin/cat=/bin/cat " + " ".join(binds))
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    return env


def lay_chain(d, depth, salt, cbuild, env):
    """Writes the chain's sources, recipe and Nix expression into `d` and
    realises it with both tools. Returns cbuild's store and the Nix
    environment (None if nix-build failed: no comparison then)."""
    write_sources(d, depth, salt)
    with open(os.path.join(d, "recipe.cb"), "w") as f:
        f.write(gen_cb(depth))
    with open(os.path.join(d, "chain.nix"), "w") as f:
        f.write(gen_nix(depth))
    store = os.path.join(d, "store")
    run([cbuild, "--store", store, "realise", "recipe.cb"], cwd=d)
    if env is not None:
        try:
            run(["nix-build", "--no-out-link", "chain.nix"], env=env, cwd=d, check=False)
        except RuntimeError as e:
            print(f"nix-build failed, no comparison: {str(e)[-400:]}", flush=True)
            env = None
    return store, env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-nix", action="store_true")
    a = ap.parse_args()
    env = None if a.no_nix else nix_with_host_compiler()
    work = tempfile.mkdtemp(prefix="cbuild-cutoff-bench-")
    try:
        cb, nx = [], []
        print(f"a chain of {a.depth} C compiles; a comment changed at its bottom", flush=True)
        for k in range(a.runs):
            d = os.path.join(work, f"run{k}")
            os.mkdir(d)
            # A salt of its own per run: nothing cached from another.
            store, env = lay_chain(d, a.depth, f"run {k} salt {os.getpid()}", a.cbuild, env)
            write_sources(d, a.depth, f"run {k} salt {os.getpid()}, edited")
            w, _, out = run([a.cbuild, "--store", store, "realise", "--json", "recipe.cb"], cwd=d,
                            stdout=subprocess.PIPE)
            built = json.loads(out)["built"]
            if len(built) != 1:
                sys.exit(f"expected one build (node 0) after the change, got {len(built)}")
            cb.append(w)
            if env is not None:
                w, _, _ = run(["nix-build", "--no-out-link", "chain.nix"], env=env, cwd=d)
                nx.append(w)
        versus("cbuild realise after the change (early cutoff)", cb,
               "nix-build after the change (rebuilds the chain)", nx, "to a finished build")
    finally:
        remove_tree(work)


if __name__ == "__main__":
    main()
