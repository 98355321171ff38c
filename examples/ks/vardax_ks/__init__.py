"""vardax-ks: an example model package for vardax-cycle — the Kuramoto–Sivashinsky
equation (`KuramotoSivashinsky`) and a nonlinear observation operator (`CubicObs`),
plugged in through entry points, with no change to vardax-cycle itself.

To plug in your own model, copy this folder and:

1. subclass `vardax_core.AbstractForwardModel` (fields `dt`, `integrator`; `state_size`,
   `vector_field`; `state_dims`, `state_coords`, `periodic`, `random_state`,
   `perturbation` as your state needs) and/or `vardax_core.AbstractObsOperator`
   (`state_size`, `obs_size`, `__call__`, `is_linear`; optionally `linearise`), whose
   constructor takes `locations=[...]` and `state_size=...` (and your parameters);
2. rename the package and list your classes in `pyproject.toml` under
   `[project.entry-points."vardax_cycle.models"]` and `."vardax_cycle.operators"`;
3. `pip install -e your-folder` into vardax-cycle's environment, and name them in an
   experiment config:

       model: {name: <model entry point>, params: {...constructor keywords...}}
       observations:
         operator: {name: <operator entry point>, params: {...}}

   The pipeline builds `Model(**params)` and `Operator(locations=..., state_size=...,
   **params)`; a `ValueError` from either is reported against the config key.

Check the derivatives before cycling (`vardax_core.tangent_linear_test`, `adjoint_test`,
`taylor_test`), as `tests/test_example_model.py` does for this package.
"""

from ._model import KuramotoSivashinsky as KuramotoSivashinsky
from ._model import stable_substeps as stable_substeps
from ._obs import CubicObs as CubicObs

__all__ = ["CubicObs", "KuramotoSivashinsky", "stable_substeps"]
__version__ = "0.1.0"
