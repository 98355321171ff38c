"""An ensemble's member forecasts spread over a Dask cluster (`compute.member_forecasts:
dask`): the members are cut into one chunk per worker thread, each chunk forecast over the
window by one Dask task (the same `vmap` over the model as in the run's process, so the
background is the one a `vmap` run computes), and the chunks gathered in member order.

The cluster is the running scheduler at `compute.dask.address`, or a LocalCluster the run
starts on its first ensemble forecast and closes when it ends. The model travels to the
workers once per run (scattered); a plugin model's package must be installed there.
"""

import os
import socket

import numpy as np

import configs

from ._restart import members_forecast
from ._runtime import configure_runtime


class MemberForecastError(RuntimeError):
    """The member forecasts failed on the cluster (a worker lost, the model raised there):
    the cycle wrote nothing, and a new run resumes it (exit code 5)."""

    exit_code = 5


def forecast_chunk(model, members: np.ndarray, steps: int) -> tuple[np.ndarray, str]:
    """On a Dask worker: the forecasts `(k, steps + 1, n)` of a chunk of members, and where
    they ran (`host:pid`)."""
    configure_runtime()  # double precision, as in the run's process
    out = np.asarray(members_forecast(model, members, steps))
    return out, f"{socket.gethostname()}:{os.getpid()}"


class MemberPool:
    """A Dask client that forecasts ensembles, and the LocalCluster it started (if any).
    `forecast(model, members, steps)` **returns** the forecasts `(N, steps + 1, n)` and the
    workers (`host:pid`) that computed them."""

    def __init__(self, cfg: configs.DaskConfig, source: str = "the config"):
        from distributed import Client, LocalCluster

        self._cluster = None
        if cfg.address:
            try:
                self.client = Client(cfg.address, timeout="20s")
            except (OSError, TimeoutError) as err:
                raise configs.ConfigError(
                    f"{source}: compute.dask.address: no Dask scheduler answers at "
                    f"{cfg.address} ({err})"
                ) from None
        else:
            self._cluster = LocalCluster(
                n_workers=cfg.n_workers,
                threads_per_worker=cfg.threads_per_worker,
                processes=True,
                dashboard_address=":0",
                preload=["tasks._members"],  # import JAX and the project once, at worker start
            )
            self.client = Client(self._cluster)
        self._model, self._remote = None, None

    def forecast(self, model, members, steps: int) -> tuple[np.ndarray, list[str]]:
        members = np.asarray(members)
        threads = max(1, sum(self.client.nthreads().values()))
        chunks = np.array_split(members, min(threads, len(members)))
        remote = self._on_workers(model)
        futures = [
            self.client.submit(forecast_chunk, remote, chunk, steps, pure=False) for chunk in chunks
        ]
        try:
            results = self.client.gather(futures)
        except Exception as err:
            raise MemberForecastError(
                f"member forecasts on the Dask cluster at {self.client.scheduler.address} "
                f"failed: {type(err).__name__}: {err}"
            ) from err
        workers = sorted({where for _, where in results})
        return np.concatenate([out for out, _ in results]), workers

    def _on_workers(self, model):
        """The model on the workers, scattered once per model."""
        if model is not self._model:
            self._model, self._remote = model, self.client.scatter(model, broadcast=True)
        return self._remote

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
