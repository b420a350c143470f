#!/usr/bin/env python3
"""Export benchmark: `cbuild export --conda` of the C library + program
example (examples/greet, -A hello: two packages) and of the Go example
(examples/go-cli), cold (empty store) and warm (export derivations cached),
against rattler-build building the equivalent recipe.yaml, interleaved in
one run.

  bench/export_bench.py [--runs 5] [--cases greet,go] [--cbuild PATH] [--no-rattler-build]

The peer is the current rattler-build from PyPI (py-rattler-build, its
Python API `build_recipes`, in a virtualenv under bench/out/ made on first
use), building without requirements or channels (offline) with the same
host cc and go. Its cold builds get a fresh GOCACHE/GOPATH, as cbuild's
builds always have; rattler-build has no cache of its own, so its second
build (with a warm GOCACHE, its best case) is the peer of cbuild's warm
export. Goals (issue 4/8): warm export at least 10x faster than
rattler-build's build; cold export no slower. CI runs it at smoke size.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, HERE, REPO, run, summary

RB_VENV = os.path.join(HERE, "out", "rb-venv")
RB_PIN = "py-rattler-build"

GREET_YAML = """\
recipe:
  name: greet-rb
  version: "1.0.0"
outputs:
  - package:
      name: libgreet
      version: "1.2.0"
    build:
      script:
        - mkdir -p $PREFIX/lib $PREFIX/include
        - cc -shared -fPIC -o $PREFIX/lib/libgreet.so $RECIPE_DIR/greet.c
        - cp $RECIPE_DIR/greet.h $PREFIX/include/
    about:
      license: MIT
      summary: Greeting library
  - package:
      name: hello
      version: "1.0.0"
    requirements:
      host:
        - libgreet
      run:
        - libgreet
    build:
      script:
        - mkdir -p $PREFIX/bin
        - cc -o $PREFIX/bin/hello $RECIPE_DIR/hello.c -I$PREFIX/include -L$PREFIX/lib -lgreet -Wl,-rpath,$PREFIX/lib
    about:
      license: MIT
      summary: Says hello
"""

GO_YAML = """\
package:
  name: devssh
  version: "0.3.0"
build:
  script:
    env:
      CGO_ENABLED: "0"
      GOTOOLCHAIN: local
      GOFLAGS: -mod=mod
    content:
      - cd $RECIPE_DIR && go build -trimpath -ldflags="-s -w -buildid=" -o $PREFIX/bin/devssh ./cmd/devssh
about:
  license: MIT
  summary: Prints the ssh command that reaches a development host
"""

RB_DRIVER = """\
import os, sys, warnings
warnings.simplefilter("ignore")
import rattler_build
recipe, out = sys.argv[1], sys.argv[2]
rattler_build.build_recipes([recipe], output_dir=out, test="skip",
                            channel=["file://" + out])
"""


def rb_python():
    py = os.path.join(RB_VENV, "bin", "python")
    if not os.path.exists(py):
        print("installing py-rattler-build into bench/out/rb-venv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", RB_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        RB_PIN], check=True)
    return py


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cases", default="greet,go")
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    ap.add_argument("--no-rattler-build", action="store_true")
    a = ap.parse_args()
    cases = [c for c in a.cases.split(",") if c]
    if "go" in cases and not shutil.which("go"):
        print("go not found: the Go case is left out (.ci/setup installs golang-go)")
        cases.remove("go")
    work = tempfile.mkdtemp(prefix="cbuild-export-bench-")
    py = None if a.no_rattler_build else rb_python()
    results = {}
    try:
        for case in cases:
            example = {"greet": "greet", "go": "go-cli"}[case]
            attr = {"greet": "hello", "go": "devssh"}[case]
            src = os.path.join(work, case, "src")
            shutil.copytree(os.path.join(REPO, "examples", example), src)
            rb_recipe = os.path.join(work, case, "rb")
            shutil.copytree(src, rb_recipe)
            with open(os.path.join(rb_recipe, "recipe.yaml"), "w") as f:
                f.write(GREET_YAML if case == "greet" else GO_YAML)
            with open(os.path.join(work, "rb_driver.py"), "w") as f:
                f.write(RB_DRIVER)
            t = {"cbuild cold": [], "cbuild warm": [], "rattler-build cold": [],
                 "rattler-build again": []}
            rss = {k: [] for k in t}
            for i in range(a.runs):
                store = os.path.join(work, case, f"store{i}")
                out = os.path.join(work, case, f"out{i}")
                env = dict(os.environ, CBUILD_STORE=store)
                cmd = [a.cbuild, "export", "--conda", "-A", attr, "-o", out, "-q"]
                w, r, _ = run(cmd, env=env, cwd=src)
                t["cbuild cold"].append(w); rss["cbuild cold"].append(r)
                w, r, _ = run(cmd, env=env, cwd=src)
                t["cbuild warm"].append(w); rss["cbuild warm"].append(r)
                shutil.rmtree(store, ignore_errors=True)
                if py:
                    rb_out = os.path.join(work, case, f"rb-out{i}")
                    gocache = os.path.join(work, case, f"gocache{i}")
                    renv = dict(os.environ, GOCACHE=gocache, GOPATH=gocache + "-path",
                                XDG_CACHE_HOME=os.path.join(work, case, f"xdg{i}"))
                    drv = [py, os.path.join(work, "rb_driver.py"),
                           os.path.join(rb_recipe, "recipe.yaml"), rb_out]
                    w, r, _ = run(drv, env=renv)
                    t["rattler-build cold"].append(w); rss["rattler-build cold"].append(r)
                    shutil.rmtree(rb_out, ignore_errors=True)
                    w, r, _ = run(drv, env=renv)
                    t["rattler-build again"].append(w); rss["rattler-build again"].append(r)
                    shutil.rmtree(rb_out, ignore_errors=True)
                    shutil.rmtree(gocache, ignore_errors=True)
                    shutil.rmtree(gocache + "-path", ignore_errors=True)
                print(f"{case}: run {i + 1}/{a.runs} done", flush=True)
            med = {}
            for k, v in t.items():
                if v:
                    med[k] = summary(f"{case} {k}", v, rss[k])
            results[case] = {k: {"median_s": statistics.median(v), "min_s": min(v),
                                 "max_s": max(v), "peak_rss_mib": max(rss[k])}
                             for k, v in t.items() if v}
            if "rattler-build cold" in med:
                print(f"{case}: cold ratio rattler-build/cbuild "
                      f"{med['rattler-build cold'] / med['cbuild cold']:.2f}x; warm ratio "
                      f"rattler-build again/cbuild warm "
                      f"{med['rattler-build again'] / med['cbuild warm']:.1f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "export_bench.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
