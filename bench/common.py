"""Shared helpers for the benchmarks: timing child processes with their peak
memory, medians, and the Nix peer's configuration."""
import atexit
import os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_CBUILD = os.path.join(REPO, "target", "release", "cbuild")
NIX_CONF = os.path.join(REPO, "..", "shared", "peers", "nix", "nix.conf")


def run(cmd, env=None, cwd=None, stdout=subprocess.DEVNULL, check=True):
    """Runs cmd; returns (wall seconds, peak RSS MiB, stdout text or None).
    A failure exits, or with check=False raises RuntimeError.
    stderr goes to a file, so a chatty command never blocks on a full pipe."""
    with tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err_file, env=env, cwd=cwd)
        out = proc.stdout.read().decode() if stdout == subprocess.PIPE else None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if proc.stdout:
            proc.stdout.close()
        if os.waitstatus_to_exitcode(status) != 0:
            err_file.seek(0)
            err = err_file.read().decode(errors="replace")
            msg = f"{' '.join(map(str, cmd))} failed:\n{err[-3000:]}"
            if not check:
                raise RuntimeError(msg)
            sys.exit(msg)
    CPU[wall] = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, out


# CPU seconds (user + system, the child and what it waited for) of each
# timed run, by its wall time: summary() reports the median of its runs'.
CPU = {}


def timed_cpu(start_usage, wall):
    """Records the CPU the children used since `start_usage` (from
    resource.getrusage(RUSAGE_CHILDREN)) for a run timed at `wall`."""
    import resource
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[wall] = (now.ru_utime - start_usage.ru_utime) + (now.ru_stime - start_usage.ru_stime)


def summary(name, walls, rss=None, per=None):
    med = statistics.median(walls)
    line = f"{name}: median {med * 1000:.1f} ms (min {min(walls) * 1000:.1f}, max {max(walls) * 1000:.1f}, {len(walls)} runs)"
    if per:
        line += f", {med * 1e6 / per:.0f} us/drv"
    if rss:
        line += f", peak RSS {max(rss):.0f} MiB"
    if walls and all(w in CPU for w in walls):
        line += f", CPU {statistics.median(CPU[w] for w in walls):.2f} s"
    print(line, flush=True)
    return med


def nix_env():
    """Environment for the daemonless Nix peer, or None if Nix is missing."""
    if not shutil.which("nix-instantiate"):
        return None
    conf_dir = tempfile.mkdtemp(prefix="cbuild-bench-nixconf-")
    # One per benchmark process: gone when it ends (53 were left in /tmp).
    atexit.register(shutil.rmtree, conf_dir, True)
    src = NIX_CONF if os.path.exists(NIX_CONF) else None
    with open(os.path.join(conf_dir, "nix.conf"), "w") as f:
        if src:
            f.write(open(src).read())
        else:
            # The peer's configuration (../shared/peers/nix/nix.conf): the
            # sandbox has no /bin/sh of its own, so bind the static busybox.
            f.write("build-users-group =\nsandbox = true\nsandbox-fallback = false\n"
                    "substituters =\nmax-jobs = 2\ncores = 1\n")
            if os.path.exists("/bin/busybox"):
                f.write("sandbox-paths = /bin/sh=/bin/busybox\n")
    env = dict(os.environ, NIX_CONF_DIR=conf_dir, NIX_USER_CONF_FILES=os.path.join(conf_dir, "nix.conf"))
    return env


def versus(ours_name, ours, peer_name, peer, faster_at):
    """Prints cbuild's and the peer's summaries and the ratio of their
    medians (`faster_at` ends the ratio line), or that there is no peer."""
    c = summary(ours_name, ours)
    if peer:
        x = summary(peer_name, peer)
        print(f"ratio: cbuild is {x / c:.1f}x faster {faster_at}", flush=True)
    else:
        print(f"{peer_name.split()[0]} not available or --no-nix: no comparison", flush=True)
    return c


def remove_tree(work):
    """Removes a benchmark's scratch tree, read-only store objects included."""
    subprocess.run(["chmod", "-R", "u+w", work], check=False)
    shutil.rmtree(work, ignore_errors=True)
