"""`screenshot`: a headless Chromium picture of the Prefect UI's page for one cycle's flow
run (its artifacts tab), to show what an operator sees.

    PREFECT_API_URL=http://127.0.0.1:4200/api python bench/screenshot.py EXPERIMENT/CYCLE_ID \
        [--out runs/ui-cycle.png] [--tab Artifacts]

Needs a real server (`vardax-cycle server`) that ran the cycle, and Debian's `chromium`
(`apt-get install chromium`), run with `--headless --no-sandbox --disable-gpu
--disable-background-networking`.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_name", help="flow run name, e.g. l96-4dvar/20260101T0600Z")
    p.add_argument("--out", default="runs/ui-cycle.png")
    p.add_argument("--tab", default="Artifacts", help="Logs, Task Runs, Artifacts, Details…")
    args = p.parse_args()
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        sys.exit("set PREFECT_API_URL to the server that ran the cycle")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("chromium not found: apt-get install chromium")
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={
            "flow_runs": {"name": {"any_": [args.run_name]}},
            "limit": 1,
            "sort": "START_TIME_DESC",
        },
        timeout=10,
    ).json()
    if not runs:
        sys.exit(f"no flow run named {args.run_name} at {api}")
    ui = api.removesuffix("/api")
    url = f"{ui}/runs/flow-run/{runs[0]['id']}?tab={args.tab}"
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1500,1100",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    print(f"{url} -> {out}")


if __name__ == "__main__":
    main()
