"""Experiment configs: the shipped ones reach what they state; bad ones name file and key."""

from pathlib import Path

import numpy as np
import pytest

import configs
import tasks
import vardax_core as vc

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_every_method_and_model_is_shipped():
    loaded = [configs.load_config(p) for p in SHIPPED]
    assert {c.method.name for c in loaded} == {
        "oi",
        "3dvar",
        "strong_4dvar",
        "weak_4dvar",
        "incremental_4dvar",
        "fourdvarnet",
        "enkf",
        "etkf",
        "letkf",
        "ienks",
        "hybrid_envar",
    }
    assert {c.model.name for c in loaded} == {"lorenz63", "lorenz96", "lorenz96_two_level", "qg"}
    assert all(c.expected.analysis_rmse is not None for c in loaded)


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_config_reaches_its_stated_rmse(path, request, tmp_path):
    """With the pipeline's numerics (the same background check, method and gate, in the
    pure-JAX loop the block task runs; cycle by cycle gives the same bits), on the config's
    own OSSE. A learned method is first trained by the train flow with the config's own
    training settings (into a copy of the config under `tmp_path`)."""
    cfg = configs.load_config(path)
    if isinstance(cfg.method, configs.LearnedMethodConfig):
        from _pipeline_helpers import experiment_config

        from flows._train import train_flow

        request.getfixturevalue("prefect_api")
        path = experiment_config(tmp_path, path.stem)
        train_flow(str(path))
    spinup = cfg.expected.spinup_cycles
    scores = tasks.reference_scores(str(path), spinup + cfg.expected.cycles, seed=0, spinup=spinup)
    rmse_a, rmse_b, out = scores["analysis"], scores["background"], scores["output"]
    passed = float(out.gate.passed.mean())
    print(f"{path.stem}: analysis {rmse_a:.4f}, background {rmse_b:.4f}, gate passed {passed:.3f}")
    assert rmse_a <= cfg.expected.analysis_rmse
    assert rmse_a < rmse_b
    if cfg.expected.background_ratio is not None:
        assert rmse_a <= cfg.expected.background_ratio * rmse_b
    # a sound configuration is rarely stopped by its own gate (learned ones state how often)
    assert passed >= cfg.expected.gate_pass


def _write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


BASE = (SHIPPED[0].parent / "l96-4dvar.yaml").read_text()


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "  locations: all",
            "  locations: all\n  colour: red",
            r"exp\.yaml: observations\.colour: unknown key",
        ),
        (
            "K: 40",
            "K: 2",
            r"exp\.yaml: model\.K: Input should be greater than or equal to 4 \(got 2\)",
        ),
        (
            "name: strong_4dvar",
            "name: weak_4dvar",
            r"exp\.yaml: method\.model_error_cov: Field required",
        ),
        (
            "name: strong_4dvar",
            "name: 4dvar",
            r"exp\.yaml: method\.name: Input should be 'oi', '3dvar'",
        ),
        (  # the value named once
            "interval: PT6H",
            "interval: 6h",
            r"cycling\.interval: not an ISO 8601 duration: '6h' \(e\.g\. PT6H, P1D\)$",
        ),
        (
            'origin: "2026-01-01T00:00Z"',
            'origin: "yesterday"',
            r"cycling\.origin: not an ISO 8601 time",
        ),
        (
            "  locations: all",
            "  locations: [0, 41]",
            r"observations\.locations \[41\] are outside the lorenz96 state of size 40",
        ),
        (
            "window_steps: 4",
            "window_steps: 0",
            r"cycling\.window_steps: Input should be greater than or equal to 1",
        ),
        (
            "prior_cov: {kind: climatological, scale: 0.007}",
            "prior_cov: {kind: periodic, variance: 1.0}",
            r"exp\.yaml: method\.prior_cov\.length_scale: Field required",
        ),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, old, new, message):
    """Through the registry: what the config's schema refuses, and what the core objects
    it builds refuse (a location outside the model's state)."""
    assert old in BASE
    with pytest.raises(configs.ConfigError, match=message):
        tasks.experiment(_write(tmp_path, BASE.replace(old, new)))


def test_impossible_combinations(tmp_path):
    # (oi takes no minimiser settings: those keys go too)
    oi_arctan = BASE.replace(
        "name: strong_4dvar\n  minimiser: bfgs\n  max_steps: 200\n", "name: oi\n"
    ).replace("  locations: all", "  locations: all\n  operator: arctan")
    with pytest.raises(configs.ConfigError, match="oi needs a linear observation operator"):
        tasks.experiment(_write(tmp_path, oi_arctan))
    uneven = BASE.replace("  locations: all", "  locations: all\n  every_steps: 3")
    with pytest.raises(
        configs.ConfigError,
        match=r"window_steps \(4\) must be a multiple of observations.every_steps \(3\)",
    ):
        configs.load_config(_write(tmp_path, uneven))


def test_yaml_and_file_errors(tmp_path):
    with pytest.raises(configs.ConfigError, match=r"config file not found: .*nope\.yaml"):
        configs.load_config(tmp_path / "nope.yaml")
    with pytest.raises(
        configs.ConfigError,
        match=r"exp\.yaml: not valid YAML at line 3, column 1: expected .,. or .\].,",
    ):
        configs.load_config(_write(tmp_path, "experiment: x\nmodel: [unclosed\n"))
    with pytest.raises(configs.ConfigError, match="must be a mapping"):
        configs.load_config(_write(tmp_path, "- a\n- b\n"))


def test_canonical_text_ignores_comments_and_key_order(tmp_path):
    import yaml

    text = SHIPPED[0].read_text()
    reordered = "# another comment\n" + yaml.safe_dump(
        dict(reversed(list(yaml.safe_load(text).items())))
    )
    a, b = (configs.parse_config(yaml.safe_load(t)) for t in (text, reordered))
    assert configs.canonical_text(a) == configs.canonical_text(b)
    with pytest.raises(Exception, match="frozen"):
        a.experiment = "other"


def test_store_identity_ignores_operational_settings():
    """A store checks `identity_text`: operational changes keep it, science changes do not."""
    import yaml

    base = yaml.safe_load(BASE)
    ident = configs.identity_text(configs.parse_config(base))
    ops = base | {
        "gates": {"policy": "halt", "chi2_dof": [0.0, 50.0]},
        "operations": {"catch_up": "latest"},
        "observations": base["observations"] | {"cutoff": "PT20M", "late_policy": "fail"},
        "store": {"url": "elsewhere.zarr", "block": 64},
        "description": "changed",
    }
    assert configs.identity_text(configs.parse_config(ops)) == ident
    for science in (
        base | {"method": base["method"] | {"max_steps": 100}},
        base | {"observations": base["observations"] | {"error_std": 0.5}},
        base | {"cycling": base["cycling"] | {"window_steps": 2}},
    ):
        assert configs.identity_text(configs.parse_config(science)) != ident


QG = (SHIPPED[0].parent / "qg-3dvar.yaml").read_text()


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "network: {kind: stations, count: 300, seed: 0}, ",
            "",
            r"qg-exp\.yaml: .*observations\.network is needed for the 2-D model qg",
        ),
        (
            "network: {kind: stations, count: 300, seed: 0}",
            "network: {kind: radar, count: 300}",
            r"observations\.network\.kind: Input should be 'gridded', 'stations', 'swath' "
            r"\(got 'radar'\)",
        ),
        (
            "prior_cov: {kind: spectral, variance: 0.001, length_scale: 4.0}",
            "prior_cov: {kind: climatological, scale: 0.01}",
            r"covariance kind climatological would form a 4096 × 4096 matrix for the qg model",
        ),
        ("ny: 64", "ny: 63", r"model\.ny: Input should be a multiple of 2"),
        (
            "source: synthetic, ",
            "source: synthetic, locations: [1, 2], ",
            r"observations\.locations and observations\.operator are for 1-D models",
        ),
    ],
)
def test_bad_2d_configs_name_the_key(tmp_path, old, new, message):
    assert old in QG
    path = tmp_path / "qg-exp.yaml"
    path.write_text(QG.replace(old, new))
    with pytest.raises(configs.ConfigError, match=message):
        tasks.experiment(path)


def test_spectral_b_needs_a_homogeneous_grid(tmp_path):
    two_level = (SHIPPED[0].parent / "l96-2l-4dvar.yaml").read_text()
    data = __import__("yaml").safe_load(two_level)
    data["method"]["prior_cov"] = {"kind": "spectral", "variance": 1.0, "length_scale": 2.0}
    with pytest.raises(configs.ConfigError, match="spectral is for a homogeneous periodic grid"):
        tasks.build_experiment(configs.parse_config(data, "two-level"), "two-level")


def test_sweep_files(tmp_path):
    base = SHIPPED[0].parent / "l96-3dvar.yaml"
    ok = f"sweep: s\nbase: {base}\nfolder: {tmp_path}/out\ncycles: 4\nmembers:\n  a: {{}}\n"
    (tmp_path / "s.yaml").write_text(ok)
    sweep, members = configs.load_sweep(tmp_path / "s.yaml")
    assert members["a"]["experiment"] == "s-a"
    assert members["a"]["store"]["url"] == f"{tmp_path}/out/a.zarr"
    bad_key = ok + "  b: {model: {name: lorenz96, K: 20}}\n"
    (tmp_path / "s.yaml").write_text(bad_key)
    with pytest.raises(configs.ConfigError, match=r"member b changes \['model'\]: members share"):
        configs.load_sweep(tmp_path / "s.yaml")
    bad_member = ok + "  c: {method: {name: weak_4dvar}}\n"
    (tmp_path / "s.yaml").write_text(bad_member)
    with pytest.raises(
        configs.ConfigError, match=r"s\.yaml: member c: method\.prior_cov: Field required"
    ):
        configs.load_sweep(tmp_path / "s.yaml")


ETKF = (SHIPPED[0].parent / "l96-etkf.yaml").read_text()
LETKF = (SHIPPED[0].parent / "l96-letkf.yaml").read_text()


@pytest.mark.parametrize(
    "text, old, new, message",
    [
        (
            ETKF,
            "members: 24",
            "members: 1",
            r"method\.members: Input should be greater than or equal to 2",
        ),
        (
            ETKF,
            "inflation: 1.0125",
            "inflation: 0.9",
            r"method\.inflation: Input should be greater than or equal to 1",
        ),
        (
            LETKF,
            "localisation: {radius: 4.0}",
            "localisation: {radius: 0}",
            r"method\.localisation\.radius",
        ),
        (
            LETKF,
            "  rtps: 0.1\n",
            "  rtps: 1.5\n",
            r"method\.rtps: Input should be less than or equal to 1",
        ),
    ],
)
def test_bad_ensemble_configs_name_the_key(tmp_path, text, old, new, message):
    assert old in text
    with pytest.raises(configs.ConfigError, match=message):
        tasks.experiment(_write(tmp_path, text.replace(old, new)))


def test_localisation_needs_the_operators_positions(tmp_path, monkeypatch):
    (tmp_path / "my_ops.py").write_text("def plain():\n    return lambda x: 2.0 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = LETKF.replace(
        "  locations: all", "  locations: all\n  operator: {target: 'my_ops:plain', linear: true}"
    )
    with pytest.raises(
        configs.ConfigError,
        match=r"method\.localisation: letkf localises observations by their positions",
    ):
        tasks.experiment(_write(tmp_path, text))
    etkf = text.replace("  name: letkf\n", "  name: etkf\n").replace(
        "  localisation: {radius: 4.0}\n", ""
    )
    assert tasks.experiment(_write(tmp_path, etkf)).core.ensemble  # a global filter needs none


def test_hybrid_envar_on_a_qg_grid_beyond_a_dense_localisation(tmp_path):
    """QG 96 × 96 (9216 variables): hybrid EnVar builds, its `L^{1/2}` applied by FFT on the
    doubly periodic grid, with no `n × n` matrix."""
    letkf = (SHIPPED[0].parent / "qg-letkf.yaml").read_text()
    data = __import__("yaml").safe_load(letkf)
    data["model"].update(ny=96, nx=96)
    data["method"].update(name="hybrid_envar", static_weight=0.1)
    exp = tasks.build_experiment(configs.parse_config(data, "qg-hybrid"), "qg-hybrid")
    method = exp.core.method
    assert isinstance(method, vc.HybridEnVar) and method.state_size == 96 * 96
    assert method.localisation_sqrt.matrix is None
    assert method.localisation_sqrt.spectrum.shape == (96, 49)


LAG4 = (SHIPPED[0].parent / "l96-ienks-lag4.yaml").read_text()


def test_sliding_windows_step_by_their_shift(tmp_path):
    """l96-ienks-lag4: windows of 4 steps, one step (one interval, PT6H) apart. A cycle is
    due once its window has ended, a day after its point; the iEnKS assimilates only the
    newest step of each window."""
    from flows import _operations

    exp = tasks.experiment(_write(tmp_path, LAG4))
    assert (exp.window, exp.shift, exp.step_seconds) == (4, 1, 6 * 3600)
    assert exp.layout.window_offsets_s == tuple(k * 6 * 3600 for k in range(5))
    assert exp.core.shift == 1 and exp.core.method.new_rows == 1
    day, hour = np.timedelta64(1, "D"), np.timedelta64(1, "h")
    origin = exp.axis.origin
    assert _operations.latest_due(exp, origin + day - hour) == -1
    assert _operations.latest_due(exp, origin + day) == 0
    assert _operations.latest_due(exp, origin + day + 7 * hour) == 1
    assert exp.osse_steps(10) == 9 + 4


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("shift_steps: 1", "shift_steps: 5", r"cycling\.shift_steps \(5\) must be at most"),
        (
            "name: ienks",
            "name: etkf",
            r"cycling\.shift_steps: overlapping windows \(1 < window_steps 4\) need a method "
            r"whose analysis is one trajectory .* etkf is not one",
        ),
        (
            "  error_std: 1.0\n",
            "  error_std: 1.0\n  every_steps: 2\n",
            r"cycling\.shift_steps \(1\) must be a multiple of observations\.every_steps \(2\)",
        ),
    ],
)
def test_bad_sliding_windows_name_the_key(tmp_path, old, new, message):
    assert old in LAG4
    with pytest.raises(configs.ConfigError, match=message):
        tasks.experiment(_write(tmp_path, LAG4.replace(old, new)))


def test_a_shift_of_one_window_is_back_to_back_windows(tmp_path):
    """`shift_steps` equal to `window_steps` is the default: the same store identity."""
    explicit = BASE.replace("window_steps: 4", "window_steps: 4, shift_steps: 4")
    assert explicit != BASE
    a = configs.load_config(_write(tmp_path, BASE))
    b = configs.load_config(_write(tmp_path, explicit))
    assert configs.identity_text(a) == configs.identity_text(b)
    assert b.cycling.shift_steps is None and b.cycling.steps_per_cycle == 4
