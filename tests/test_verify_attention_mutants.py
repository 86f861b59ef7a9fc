"""The attention/feature mutant corpus: every mutant of a fast subset is killed at default settings, the corpus
covers the bugs issue 11 names, and each op of the family has mutants.  (The whole corpus runs with
``python -m oracles mutants --op attention`` / ``--op features``, which must report 100%.)"""
import pytest

from oracles.mutants import all_mutants, import_errors, kill_table, run_mutants

# one or two per op, the cheap ones, including the ones only the argument-path probe kills
FAST = ["attention.softmax:off-by-one-causal", "attention.softmax:stabilizer-over-all-keys",
        "attention.softmax:flash-softmax-scale-twice", "attention.softmax:gqa-head-mapping-cyclic",
        "attention.linear:eps-in-numerator", "attention.linear:fla-scale-twice",
        "attention.linear:state-layout-ignored", "attention.delta_rule:beta-and-gate-swapped",
        "attention.delta_rule:refimpl-scale-twice", "features.performer:positive-without-half-norm",
        "features.orthogonal_projection:unsigned-qr", "features.orthogonal_projection:chi-norms-replaced-by-sqrt-d",
        "attention.multi_head:W_O-omitted", "attention.sinusoidal:sin-cos-swapped",
        "attention.fast_weights:read-before-write", "features.dpfp:roll-wrong-direction",
        "features.elu_plus_one:relu-plus-one", "attention.performer:key-stabilizer-over-all-keys"]


def test_the_corpus_loads_and_covers_the_family():
    assert "attention" not in import_errors()
    ms = all_mutants("attention", kind="forward") + all_mutants("features", kind="forward")
    assert len(ms) >= 20
    ops = {m.op for m in ms}
    assert {"attention.softmax", "attention.linear", "attention.delta_rule", "features.performer",
            "features.orthogonal_projection", "attention.multi_head", "attention.sinusoidal",
            "attention.fast_weights", "attention.performer", "features.dpfp", "features.elu_plus_one"} <= ops
    names = {m.key for m in ms}
    assert set(FAST) <= names
    for wanted in ("attention.softmax:wrong-window-edge", "attention.softmax:scale-applied-twice",
                   "attention.softmax:scale-missing", "attention.softmax:softcap-missing",
                   "attention.delta_rule:decay-after-update", "attention.delta_rule:key-norm-missing",
                   "attention.multi_head:W_O-omitted"):
        assert wanted in names


@pytest.mark.parametrize("key", FAST)
def test_fast_subset_is_killed(key):
    (r,) = run_mutants(key.split(":")[0], names=[key])
    assert r.error is None, r.error
    assert r.killed, f"{key} survived: {r.verdict}"
    assert kill_table([r])[0]["rate"] == 1.0


def test_scale_twice_through_an_argument_is_caught_only_by_the_argument_paths_probe():
    from oracles.verify import verify

    m = {m.key: m for m in all_mutants("attention.linear", kind="forward")}["attention.linear:fla-scale-twice"]
    rep = verify(m.op, m.fn, adapter=m.adapter, candidate_name=m.key)
    assert all(c.passed for c in rep.cases)  # the default scale (1) cannot show it...
    paths = [p for p in rep.probes if p.name == "argument_paths"]
    assert paths and not paths[0].passed and "under scale=0.37" in paths[0].message  # ...the other path does
