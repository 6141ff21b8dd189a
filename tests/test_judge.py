"""The track judge (issue 39): features, verdicts, its judge.json in a bundle, the env's use of it."""

import shutil

import gymnasium as gym
import numpy as np
import pytest

import wmgym  # noqa: F401  (registers the envs)
from conftest import tiny_grasp_prior
from wmgym.actions import identity_action
from wmgym.envs.bundle import Bundle
from wmgym.rewards.judge import SuccessJudge, TrackSuccessJudge, make_judge
from wmgym.rewards.track_judge import FEATURE_NAMES, JUDGE_FILE, TrackJudge, TrackJudgeRows, prefix_features
from wmgym.sim.tasks import TASKS
from wmgym.train.judge import choose_threshold, confusion_by_behaviour, fit_judge

pytestmark = pytest.mark.usefixtures("one_thread")
F = len(FEATURE_NAMES) + len(TASKS)


def _episodes(n: int, t: int, seed: int = 0):
    """Random but plausible signals: p_done (n, t), poses (n, t, 8), p_held and drawn (n, t, 2), task ids (n,)."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.05, (n, t, 8))
    poses[..., [3, 7]] = rng.choice([0.0, 0.08], size=(n, t, 2))
    closed = poses[..., [3, 7]] < 0.02
    p_held = rng.uniform(size=(n, t, 2)) * closed
    return rng.uniform(size=(n, t)), poses, p_held, (p_held > 0.5).astype(float), rng.integers(0, len(TASKS), n)


def _judge(weights: dict[str, float], bias: float, threshold: float = 0.5) -> TrackJudge:
    """A one-unit judge: p = sigmoid(10 * tanh(sum of the named raw features' weights) + bias)."""
    w = np.zeros((1, F))
    for name, value in weights.items():
        w[0, FEATURE_NAMES.index(name)] = value
    return TrackJudge(TASKS, np.zeros(F), np.ones(F), w, np.zeros(1), np.array([10.0]), bias, threshold)


def test_prefix_features_have_one_row_per_prefix_and_read_no_future_frame():
    p, poses, p_held, drawn, tasks = _episodes(3, 6)
    features = prefix_features(p, poses, p_held, drawn, tasks, len(TASKS))
    assert features.shape == (3, 6, F)
    assert np.isfinite(features).all()
    later = [a.copy() for a in (p, poses, p_held, drawn)]
    for a in later:
        a[:, 4:] = a[:, 4:][::-1] + 1.0  # change frames 4 and 5 only
    changed = prefix_features(*later, tasks, len(TASKS))
    np.testing.assert_array_equal(changed[:, :4], features[:, :4])
    assert not np.array_equal(changed[:, 4:], features[:, 4:])


def test_verdicts_are_deterministic_and_follow_the_threshold():
    p, poses, p_held, drawn, tasks = _episodes(4, 5)
    judge = _judge({"logit_p": 1.0}, bias=0.0)
    features = prefix_features(p, poses, p_held, drawn, tasks, len(TASKS))
    first, second = judge.probability(features), judge.probability(features.copy())
    np.testing.assert_array_equal(first, second)
    assert first.shape == (4, 5)
    np.testing.assert_array_equal(first[:, 1:] >= 0.5, p[:, 1:] >= 0.5)  # the p(done) logit's sign decides (frame 0 is never judged)


def test_rows_stepped_one_frame_at_a_time_equal_the_offline_features():
    p, poses, p_held_unused, drawn, tasks = _episodes(2, 6, seed=1)
    prior = tiny_grasp_prior(0.0)
    judge = TrackJudge(TASKS, np.zeros(F), np.ones(F), np.random.default_rng(0).normal(0, 0.3, (4, F)),
                       np.zeros(4), np.ones(4), 0.0, 0.5)
    rows = TrackJudgeRows(judge, prior, num_rows=2)
    stepped = np.stack([rows.probability([0, 1], np.array([s + 1, s + 1]), p[:, s], poses[:, s - 1], poses[:, s],
                                         drawn[:, s], [TASKS[i] for i in tasks]) for s in range(1, 6)], axis=1)
    p_held = prior.frame_held(poses.astype(np.float32)).numpy()
    offline = judge.probability(prefix_features(p, poses, p_held, drawn, tasks, len(TASKS)))[:, 1:]
    np.testing.assert_allclose(stepped, offline, atol=1e-6)


def test_judge_file_round_trips_and_a_damaged_one_is_refused_naming_it(tmp_path):
    judge = _judge({"both_open": 1.0}, bias=-3.0, threshold=0.7)
    path = judge.save(tmp_path / JUDGE_FILE)
    again = TrackJudge.load(path)
    assert again.threshold == 0.7 and again.tasks == tuple(TASKS)
    features = np.random.default_rng(0).normal(size=(5, F))
    np.testing.assert_array_equal(again.probability(features), judge.probability(features))
    for damage in ("{not json", '{"format": "something else"}', path.read_text().replace('"threshold": 0.7', '"threshold": 7')):
        path.write_text(damage)
        with pytest.raises(ValueError, match=str(path.name)):
            TrackJudge.load(path)


@pytest.fixture
def judged_bundle(tiny_held_bundle, tmp_path):
    """A copy of the held-conditioned tiny bundle with a judge.json that says "done" exactly when a
    grasp draw has held so far (and the prior's p(held) is 1: every closing is drawn held)."""
    root = tmp_path / "judged"
    shutil.copytree(tiny_held_bundle, root)
    _judge({"drawn_held_left": 1.0, "drawn_held_right": 1.0}, bias=-5.0).save(root / JUDGE_FILE)
    return root


def test_bundle_with_judge_file_loads_the_track_judge_and_without_it_videoclip_alone(judged_bundle, tiny_held_bundle):
    assert Bundle.load(judged_bundle).judge_file == judged_bundle / JUDGE_FILE
    assert Bundle.load(tiny_held_bundle).judge_file is None
    with_file = gym.make("WMFold-v0", checkpoint=str(judged_bundle), device="cpu").unwrapped.core.judge
    without = gym.make("WMFold-v0", checkpoint=str(tiny_held_bundle), device="cpu").unwrapped.core.judge
    assert isinstance(with_file, TrackSuccessJudge) and with_file.threshold == 0.5
    assert type(without) is SuccessJudge


def test_damaged_judge_file_in_a_bundle_fails_on_make_naming_it(judged_bundle):
    (judged_bundle / JUDGE_FILE).write_text('{"format": "wmgym-track-judge-1", "tasks": []}')
    with pytest.raises(ValueError, match="judge.json is not a usable track judge"):
        gym.make("WMFold-v0", checkpoint=str(judged_bundle), device="cpu")


def test_judge_needs_the_world_models_grasp_prior(judged_bundle):
    bundle = Bundle.load(judged_bundle)
    with pytest.raises(ValueError, match="no grasp_prior"):
        make_judge(bundle, head=None, world_model=object(), num_rows=1)


def test_env_terminates_when_the_track_judge_reads_a_held_grasp_draw(judged_bundle):
    start = Bundle.load(judged_bundle).start_frames[0]
    widths = [(0.08, 0.08), (0.08, 0.08), (0.0, 0.08), (0.0, 0.0)]  # the left hand closes at the third step
    for bias, expected in ((20.0, [False, False, True, True]), (-20.0, [False] * 4)):  # every closing held / none
        env = gym.make("WMFold-v0", checkpoint=str(judged_bundle), device="cpu")
        env.unwrapped.core.model.grasp_prior = tiny_grasp_prior(bias)
        env.unwrapped.core.judge.rows.grasp_prior = env.unwrapped.core.model.grasp_prior
        env.reset(seed=0, options={"frame": start})
        said = [env.step(identity_action(*w))[2] for w in widths]
        assert said == expected


def test_fit_judge_learns_a_separable_signal_and_reports_each_behaviour():
    n, t = 120, 5
    p, poses, p_held, drawn, tasks = _episodes(n, t, seed=2)
    done = np.maximum.accumulate(p > 0.8, axis=1) & (np.arange(t) > 0)  # VideoCLIP said so at a frame >= 1
    done[:, 1:] = np.maximum.accumulate(p[:, 1:] > 0.8, axis=1)
    signals = {"p_done": p, "poses": poses, "p_held": p_held, "drawn": drawn, "done": done,
               "success": done[:, 1:].any(1), "task": np.array([TASKS[i] for i in tasks]),
               "kind": np.array(["demo", "perturbed", "random", "replay"] * (n // 4)),
               "noise": np.zeros(n), "seed": np.arange(n), "index": np.arange(n)}
    judge, figures = fit_judge(signals, TASKS, hidden=4, steps=300, calibration_fraction=0.3)
    assert figures["all"]["accuracy"] >= 0.9 and figures["all"]["count"] == 36
    assert set(figures) == {"demo clean", "perturbed", "random", "replay", "all"}
    again, _ = fit_judge(signals, TASKS, hidden=4, steps=300, calibration_fraction=0.3)
    np.testing.assert_array_equal(again.hidden_weight, judge.hidden_weight)  # seeded: the same judge


def test_threshold_choice_keeps_the_recall_floor_and_confusion_counts_add_up():
    peaks, success = np.array([0.9, 0.6, 0.2, 0.3, 0.25]), np.array([True, True, True, False, False])
    assert 0.3 < choose_threshold(peaks, success, min_recall=0.0) <= 0.6  # best accuracy (4/5) misses one success
    assert choose_threshold(peaks, success, min_recall=1.0) <= 0.2  # the recall floor accepts them all
    signals = {"success": success, "kind": np.array(["demo"] * 5), "noise": np.array([0, 0.01, 0, 0, 0.02])}
    figures = confusion_by_behaviour(peaks >= 0.5, signals)
    assert sum(figures["all"][k] for k in ("tp", "fp", "fn", "tn")) == 5
    assert (figures["demo clean"]["count"], figures["demo noisy"]["count"]) == (3, 2)


def test_shipped_bundle_ships_a_track_judge_for_every_task():
    bundle = Bundle.load(None)
    judge = TrackJudge.load(bundle.judge_file)
    assert set(judge.tasks) == set(bundle.captions) and 0.0 < judge.threshold < 1.0
    assert judge.info["made_with"]["command"] == "wmgym train-judge"
