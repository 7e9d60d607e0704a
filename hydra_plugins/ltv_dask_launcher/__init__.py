"""ltv's Hydra launcher: the jobs of a multirun (a sweep's trials) on the run's Dask cluster.

``override hydra/launcher: ltv_dask``. Light on purpose: Hydra imports every non-underscore module here
while scanning for plugins, so Dask is only imported when jobs are launched.
"""
