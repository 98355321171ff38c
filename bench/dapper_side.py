"""DAPPER's own methods on vardax-cycle's truth and observations (`bench/ensemble.py
--dapper PYTHON` writes them and runs this with a Python that has DAPPER installed, e.g.
`python -m venv /tmp/dapper && /tmp/dapper/bin/pip install dapper`; it is not a project
dependency).

    PYTHON bench/dapper_side.py FOLDER [SPINUP] [--only LABEL …] [--repeats K]
    # reads FOLDER/{truth,obs,first}.npy, prints JSON

Each method runs on DAPPER's sakov2008 model (Lorenz-96, RK4, dt 0.05, every site observed
every step, R = I) twice: with its statistics on, as its users run it (its RMSE and time),
and with them off (`Stats.assess` a no-op: the time of the method alone). Times are the
wall time of `assimilate` per cycle, the median of `--repeats` runs (each from the same
seed, so the same numbers).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import dapper.da_methods as da
import dapper.mods as modelling
import dapper.stats
import dapper.tools.progressbar as progressbar
import numpy as np
from dapper.mods.Lorenz96.sakov2008 import HMM
from dapper.tools.seeding import set_seed

METHODS = {  # DAPPER's own sakov2008 settings for each method
    "etkf N=24": lambda: da.EnKF("Sqrt", N=24, infl=1.02, rot=True),
    "etkf N=10": lambda: da.EnKF("Sqrt", N=10, infl=1.05, rot=True),
    "enkf N=40": lambda: da.EnKF("PertObs", N=40, infl=1.06),
    "letkf N=7": lambda: da.LETKF(N=7, loc_rad=4, infl=1.04, rot=True),
    "ienks Lag 4 N=20": lambda: da.iEnKS("Sqrt", N=20, Lag=4, infl=1.01, rot=True),
}


def _timed(make, truth, obs):
    """A fresh `make()` run from seed 3000: **returns** (the method, its wall seconds)."""
    xp = make()
    set_seed(3000)
    t0 = time.perf_counter()
    xp.assimilate(HMM, truth, obs, liveplots=False)
    return xp, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder", type=Path)
    p.add_argument("spinup", type=int, nargs="?", default=500)
    p.add_argument("--only", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    progressbar.disable_progbar = True
    truth, obs, first = (np.load(args.folder / f"{n}.npy") for n in ("truth", "obs", "first"))
    HMM.tseq = modelling.Chronology(0.05, dko=1, Ko=len(obs) - 1, BurnIn=0)
    HMM.X0 = modelling.GaussRV(mu=first, C=0.01)
    out = {}
    for label in args.only:
        make = METHODS[label]
        runs = [_timed(make, truth, obs) for _ in range(args.repeats)]
        xp, walls = runs[0][0], [w for _, w in runs]
        mu = np.asarray(xp.stats.mu.a)  # the analysis mean at each observation time
        err = np.sqrt(np.mean((mu - truth[1 : len(mu) + 1]) ** 2, axis=1))
        assess, dapper.stats.Stats.assess = dapper.stats.Stats.assess, lambda *a, **k: None
        try:
            bare = [_timed(make, truth, obs)[1] for _ in range(args.repeats)]
        finally:
            dapper.stats.Stats.assess = assess
        out[label] = {
            "rmse.a": float(np.mean(err[args.spinup :])),
            "ms/cycle": 1e3 * statistics.median(walls) / len(obs),
            "ms/cycle bare": 1e3 * statistics.median(bare) / len(obs),
            "ms/cycle runs": [1e3 * w / len(obs) for w in walls],
        }
        print(label, out[label], file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
