"""Solve SPEC from CHANNEL (a URL) with py-rattler and install it into PREFIX.

Usage: rattler_install.py CHANNEL_URL SPEC PREFIX
"""
import asyncio
import os
import sys

import rattler


async def main(channel, spec, prefix):
    cache = os.path.join(os.path.dirname(prefix), "rattler-cache")
    gw = rattler.Gateway(cache_dir=os.path.join(cache, "gateway"))
    records = await rattler.solve(
        [rattler.Channel(channel)], [spec], gateway=gw,
        platforms=[rattler.Platform.current(), rattler.Platform("noarch")],
        virtual_packages=rattler.VirtualPackage.detect(),
    )
    await rattler.install(records, target_prefix=prefix, cache_dir=os.path.join(cache, "pkgs"),
                          show_progress=False, execute_link_scripts=False)
    for r in records:
        print(f"{r.name.normalized}-{r.version}-{r.build}")


asyncio.run(main(*sys.argv[1:4]))
sys.stdout.flush()
# py-rattler 0.28's threads can crash the interpreter while it finalizes
# ("PyGILState_Release ... must be current"), after the install succeeded.
os._exit(0)
