#!/usr/bin/env python3
"""Audit and check benchmark: `cbuild audit` of one output holding N files
(default 10,000; a few of them ELF programs), and the compare of `cbuild
check` on it, with the rebuild itself timed apart.

  bench/audit_bench.py [--files 10000] [--big-mb 200] [--runs 5] [--cbuild PATH]

Targets (issue 10): audit of a 10,000-file output under 2 s; check adds only
the rebuild plus a compare at disk speed. A reproduced output needs no
compare (its content address is computed as any build's is); where one
file differs, `check -v` times the compare itself, which is reported for
the many-file output and for one large file (`--big-mb`) that differs in
its last bytes, so that every byte is read. There is no peer: neither Nix nor rattler-build audits outputs
or names what differs. CI runs it at smoke size.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, run, summary

RECIPE = """\
package {{
  name = "many", version = "1",
  build_inputs = [host_tool("cc"), host_tool("seq")],
  script = ''
    mkdir -p $out/share $out/bin
    printf 'int main(void) {{ return 0; }}\\n' > main.c
    for i in 1 2 3 4 5; do cc -o $out/bin/prog$i main.c; done
    cd $out/share
    for d in $(seq 0 {dirs}); do
      mkdir d$d
      for f in $(seq 1 100); do
        printf 'file %s of %s: some text that is the same every time\\n' $f $d > d$d/f$f.txt
      done
    done
    {stamp}
  '',
}}
"""


BIG = """\
package {{
  name = "big", version = "1",
  script = ''
    mkdir -p $out/share
    head -c {size} /dev/zero | tr '\\0' 'x' > $out/share/big
    {stamp}
  '',
}}
"""


def compare_ms(cbuild, env, cwd):
    """Runs `check -v` on a target that differs; the compare's own time."""
    p = subprocess.run([cbuild, "check", "-v"], env=env, cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr.splitlines():
        if line.startswith("compared ") and " MB in " in line:
            mb = float(line.split(": ")[1].split(" MB in ")[0])
            ms = float(line.split(" MB in ")[1].split(" ms")[0])
            return mb, ms
    raise SystemExit(f"check -v printed no compare time:\n{p.stderr}")


def size_of(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cbuild-audit-bench-")
    try:
        srcs = {}
        variants = [
            ("same", RECIPE, ""),
            ("stamped", RECIPE, "date +%s%N > $out/share/d0/stamp"),
            ("big", BIG, "date +%s%N >> $out/share/big"),
        ]
        for kind, recipe, stamp in variants:
            src = os.path.join(work, kind)
            os.makedirs(src)
            with open(os.path.join(src, "recipe.cb"), "w") as f:
                f.write(recipe.format(dirs=max(a.files // 100 - 1, 0), stamp=stamp,
                                      size=a.big_mb * 1000 * 1000))
            srcs[kind] = src
        env = dict(os.environ, CBUILD_STORE=os.path.join(work, "store"))
        outs = {}
        for kind, src in srcs.items():
            _, _, out = run([a.cbuild, "realise", "-q"], env=env, cwd=src, stdout=subprocess.PIPE)
            outs[kind] = out.strip().splitlines()[0]
        nfiles = sum(len(fs) for _, _, fs in os.walk(outs["same"]))
        mb = size_of(outs["same"]) / 1e6
        print(f"output: {nfiles} files, {mb:.1f} MB", flush=True)
        audit, rss, same, small_cmp, big_cmp = [], [], [], [], []
        for _ in range(a.runs):
            w, r, _ = run([a.cbuild, "audit", "-q"], env=env, cwd=srcs["same"])
            audit.append(w)
            rss.append(r)
            w, _, _ = run([a.cbuild, "check", "-q"], env=env, cwd=srcs["same"])
            same.append(w)
            small_cmp.append(compare_ms(a.cbuild, env, srcs["stamped"]))
            big_cmp.append(compare_ms(a.cbuild, env, srcs["big"]))
        med_audit = summary(f"cbuild audit, {nfiles} files", audit, rss)
        med_same = summary("cbuild check, reproducible (rebuild; the content address decides)", same)
        for label, got in [(f"{nfiles} small files", small_cmp), (f"one {a.big_mb} MB file", big_cmp)]:
            ms = sorted(m for _, m in got)[len(got) // 2]
            read_mb = got[0][0]
            print(f"check's compare, {label}: median {ms:.0f} ms (min {min(m for _, m in got):.0f}, "
                  f"max {max(m for _, m in got):.0f}) for {read_mb:.1f} MB read: "
                  f"{read_mb / max(ms / 1000, 1e-9):.0f} MB/s", flush=True)
        print(f"audit target: under 2 s for 10,000 files: {'met' if med_audit < 2 else 'NOT met'} "
              f"({med_audit:.2f} s)", flush=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
