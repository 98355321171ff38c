"""The one place that maps config names to `vardax_core` objects."""

import jax
import optimistix as optx

import vardax_core as vc

_MINIMISERS = {
    "bfgs": optx.BFGS,
    "lbfgs": optx.LBFGS,
    "nonlinear_cg": optx.NonlinearCG,
    "levenberg_marquardt": optx.LevenbergMarquardt,
}


def build_model(cfg) -> vc.AbstractForwardModel:
    """`cfg`: an experiment's `model` section."""
    integrator = vc.RK4(substeps=cfg.substeps) if cfg.integrator == "rk4" else vc.Diffrax()
    params = cfg.model_dump(exclude={"name", "integrator", "substeps"})
    cls = {
        "lorenz63": vc.Lorenz63,
        "lorenz96": vc.Lorenz96,
        "lorenz96_two_level": vc.Lorenz96TwoLevel,
        "qg": vc.QuasiGeostrophic,
    }
    return cls[cfg.name](**params, integrator=integrator)


def network_points(cfg):
    """The observed points `(y, x)` of a 2-D model's `observations.network`, and for swaths
    the track of each point (else `None`)."""
    net, shape = cfg.observations.network, cfg.model.grid_shape
    if net.kind == "gridded":
        return vc.gridded_points(shape, net.every, net.offset), None
    if net.kind == "stations":
        return vc.station_points(shape, net.count, net.seed), None
    return vc.swath_points(shape, net.tracks, net.width, net.spacing, net.angle)


def build_obs_operator(cfg, model) -> vc.AbstractObsOperator:
    """`cfg`: the experiment config."""
    if cfg.observations.network is not None:
        return vc.BilinearObs(network_points(cfg)[0], cfg.model.grid_shape)
    n = model.state_size
    locations = cfg.observations.location_indices(n)
    if cfg.observations.operator == "identity":
        return vc.SubsetObs(locations, n)
    return vc.NonlinearObs(locations, n)


def build_covariance(cov, model, seed: int = 0) -> vc.AbstractCovariance:
    """`cov`: a `CovarianceConfig`. A climatological one integrates a free run of
    `climate_steps` (from `seed`) to estimate the covariance."""
    n = model.state_size
    if cov.kind == "scaled_identity":
        return vc.ScaledIdentityCovariance(n, cov.variance)
    if cov.kind == "diagonal":
        return vc.DiagonalCovariance(cov.variances)
    if cov.kind == "spectral":
        shape = getattr(model, "grid_shape", (model.state_size,))  # a 2-D field or a ring
        return vc.SpectralCovariance(shape, cov.length_scale, cov.variance)
    if cov.kind == "periodic":
        return vc.periodic_covariance(n, cov.length_scale, cov.variance, cov.kernel)
    climate = vc.nature_run(model, jax.random.PRNGKey(seed), cov.climate_steps, 1000)
    return vc.climatological_covariance(climate, cov.scale, cov.nugget)


def build_covariances(cfg, model, obs_operator, seed: int = 0):
    """`(B, R)` of the experiment."""
    B = build_covariance(cfg.method.prior_cov, model, seed)
    R = vc.ScaledIdentityCovariance(obs_operator.obs_size, cfg.observations.error_std**2)
    return B, R


def build_method(cfg, model, obs_operator, seed: int = 0) -> vc.AbstractAnalysisMethod:
    """The configured classical analysis method (`cfg`: the experiment config); a learned
    one comes from its checkpoint (`tasks._learned`)."""
    m = cfg.method
    if m.learned:
        raise ValueError(f"build_method: {m.name} is learned; load it from its checkpoint")
    B, R = build_covariances(cfg, model, obs_operator, seed)
    kw = dict(obs_operator=obs_operator, prior_cov=B, obs_cov=R)
    minimiser = (
        {}
        if m.minimiser is None
        else {"minimiser": _MINIMISERS[m.minimiser](rtol=m.rtol, atol=m.atol)}
    )
    if m.name == "oi":
        return vc.OptimalInterpolation(**kw)
    if m.name == "3dvar":
        return vc.ThreeDVar(**kw, **minimiser, max_steps=m.max_steps)
    if m.name == "strong_4dvar":
        return vc.StrongFourDVar(model, **kw, **minimiser, max_steps=m.max_steps)
    if m.name == "weak_4dvar":
        Q = build_covariance(m.model_error_cov, model, seed)
        return vc.WeakFourDVar(model, **kw, model_error_cov=Q, **minimiser, max_steps=m.max_steps)
    return vc.IncrementalFourDVar(
        model, **kw, n_outer=m.n_outer, n_inner=m.n_inner, tolerance=m.rtol
    )


def osse_problem(cfg, n_cycles: int, seed: int = 0) -> vc.CycledProblem:
    """The OSSE of an experiment: truth and observations for `n_cycles` windows."""
    model = build_model(cfg.model)
    H = build_obs_operator(cfg, model)
    n_steps = n_cycles * cfg.cycling.window_steps
    seen = None
    if cfg.observations.network is not None:
        track = network_points(cfg)[1]
        if track is not None:
            seen = vc.swath_schedule(track, n_steps + 1, cfg.observations.every_steps)
    return vc.cycled_problem(
        model,
        H,
        cfg.observations.error_std,
        n_steps,
        jax.random.PRNGKey(seed),
        spinup_steps=cfg.cycling.spinup_steps,
        first_guess_std=cfg.cycling.first_guess_std,
        obs_every=cfg.observations.every_steps,
        seen=seen,
    )
