"""DAPPER's own methods on vardax-cycle's truth and observations (`bench/ensemble.py
--dapper PYTHON` writes them and runs this with a Python that has DAPPER installed, e.g.
`python -m venv /tmp/dapper && /tmp/dapper/bin/pip install dapper`; it is not a project
dependency).

    PYTHON bench/dapper_side.py FOLDER   # reads FOLDER/{truth,obs,first}.npy, prints JSON

Each method runs on DAPPER's sakov2008 model (Lorenz-96, RK4, dt 0.05, every site observed
every step, R = I) twice: with its statistics on, as its users run it (its RMSE and time),
and with them off (`Stats.assess` a no-op: the time of the method alone). Times are the
wall time of `assimilate` per cycle.
"""

import json
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


def main():
    progressbar.disable_progbar = True
    folder = Path(sys.argv[1])
    truth, obs, first = (np.load(folder / f"{n}.npy") for n in ("truth", "obs", "first"))
    spinup = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    HMM.tseq = modelling.Chronology(0.05, dko=1, Ko=len(obs) - 1, BurnIn=0)
    HMM.X0 = modelling.GaussRV(mu=first, C=0.01)
    out = {}
    for label, make in METHODS.items():
        xp = make()
        set_seed(3000)
        t0 = time.perf_counter()
        xp.assimilate(HMM, truth, obs, liveplots=False)
        wall = time.perf_counter() - t0
        mu = np.asarray(xp.stats.mu.a)  # the analysis mean at each observation time
        err = np.sqrt(np.mean((mu - truth[1 : len(mu) + 1]) ** 2, axis=1))
        quiet = make()
        set_seed(3000)
        assess, dapper.stats.Stats.assess = dapper.stats.Stats.assess, lambda *a, **k: None
        t0 = time.perf_counter()
        quiet.assimilate(HMM, truth, obs, liveplots=False)
        bare = time.perf_counter() - t0
        dapper.stats.Stats.assess = assess
        out[label] = {
            "rmse.a": float(np.mean(err[spinup:])),
            "ms/cycle": 1e3 * wall / len(obs),
            "ms/cycle bare": 1e3 * bare / len(obs),
        }
        print(label, out[label], file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
