#!/usr/bin/env python3
"""Publish benchmark: `cbuild publish` of N packages to a local Quetz server
(quetz-server from .venv-quetz, started here on a loopback port) against the
server's own ingest time, and a publish that finds them all there.

  bench/publish_bench.py [--packages 20] [--runs 3] [--cbuild PATH]

The server's ingest time is measured by uploading the same packages with
curl, one request each, to the same API (other packages of the same size
for each run and side, into channel0), so what
cbuild adds on top (its checks, the repodata read, streaming) is the
difference. Target (issue 12): publishing takes no more than the server's
ingest time plus a small constant; a no-op re-publish is under 1 s.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_CBUILD, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUETZ = os.path.join(REPO, ".venv-quetz", "bin", "quetz")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cbuild", default=DEFAULT_CBUILD)
    a = ap.parse_args()
    if not os.path.exists(QUETZ):
        print("quetz not found in .venv-quetz (run .ci/setup): skipped", flush=True)
        return
    work = tempfile.mkdtemp(prefix="cbuild-publish-bench-")
    server = None
    try:
        # Other packages for each run and side: the dev deployment's user
        # may upload to channel0 but not create channels.
        sets = [(k, side) for k in range(a.runs) for side in ("cb", "curl")]
        fields = "".join(
            f'  {side}{k}p{i} = package {{ name = "bench-{side}{k}-p{i}", version = "1", '
            f'script = "mkdir -p $out/share; head -c 200000 /dev/zero > $out/share/data; echo {i} > $out/share/i" }},\n'
            for (k, side) in sets for i in range(a.packages))
        with open(os.path.join(work, "recipe.cb"), "w") as f:
            f.write("{\n" + fields + "}\n")
        env = dict(os.environ, CBUILD_STORE=os.path.join(work, "store"))
        out = subprocess.run([a.cbuild, "export", "--conda", "-o", "pkgs", "--json", "-q"],
                             cwd=work, env=env, check=True, stdout=subprocess.PIPE).stdout
        exported = json.loads(out)
        pkgs_of = {(k, side): [p["path"] for p in exported
                               if p["name"].startswith(f"bench-{side}{k}-")]
                   for (k, side) in sets}
        deployment = os.path.join(work, "quetz")
        created = subprocess.run([QUETZ, "create", deployment, "--dev", "--create-conf"],
                                 cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        key = re.search(r"Test API key created for user \"\w+\": (\w+)", created.stdout).group(1)
        port = free_port()
        server = subprocess.Popen([QUETZ, "start", deployment, "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        env["CBUILD_QUETZ_API_KEY"] = key
        cb, ingest, noop = [], [], []
        for k in range(a.runs):
            t = time.perf_counter()
            for p in pkgs_of[(k, "curl")]:
                sha = subprocess.run(["sha256sum", p], stdout=subprocess.PIPE, text=True,
                                     check=True).stdout.split()[0]
                subprocess.run(["curl", "-sf", "-X", "POST", "-H", f"X-API-Key: {key}",
                                "--data-binary", f"@{p}",
                                f"{base}/api/channels/channel0/upload/{os.path.basename(p)}?sha256={sha}"],
                               check=True, stdout=subprocess.DEVNULL)
            ingest.append(time.perf_counter() - t)
            t = time.perf_counter()
            pkgs = pkgs_of[(k, "cb")]
            subprocess.run([a.cbuild, "publish", *pkgs, "--to", f"quetz+{base}/channel0", "-q"],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            cb.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = subprocess.run([a.cbuild, "publish", *pkgs, "--to", f"quetz+{base}/channel0",
                                "--json", "-q"], env=env, check=True, stdout=subprocess.PIPE)
            noop.append(time.perf_counter() - t)
            assert all(x["result"] == "already there" for x in json.loads(r.stdout))
        m_in = summary(f"the server's ingest: {a.packages} uploads with curl", ingest)
        m_cb = summary(f"cbuild publish of {a.packages} packages", cb)
        m_no = summary(f"cbuild publish again (nothing to upload)", noop)
        print(f"cbuild adds {(m_cb - m_in) * 1000:.0f} ms to the server's ingest "
              f"({m_cb / m_in:.2f}x); the no-op publish takes {m_no:.2f} s (target: under 1 s)",
              flush=True)
    finally:
        if server:
            # Its workers are processes of their own: the whole group goes.
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        subprocess.run(["chmod", "-R", "u+w", work])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
