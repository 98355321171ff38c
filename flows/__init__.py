"""flows: the Prefect flows of the cycle (one cycle, runs and backfills, schedules, the OSSE,
training, sweeps and ensembles on Dask) and the `vardax-cycle` command line."""
