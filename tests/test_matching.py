"""Caption-action matching: each branch of the rule at its boundary."""

import pytest

from auteur_jax.data.matching import MatchRule, iou, match_clips_to_actions, matches


def test_iou():
  assert iou((0, 10), (0, 10)) == 1.0
  assert iou((0, 10), (10, 20)) == 0.0
  assert iou((0, 10), (5, 15)) == pytest.approx(5 / 15)


def test_strict_iou_boundary():
  # IoU exactly 0.5 does not match by the first branch (strict >) ...
  assert iou((0, 10), (0, 5)) == 0.5
  clip, action = (0, 5), (0, 10)  # clip end < action end: the loose branch fails too.
  assert not matches(clip, action)
  # ... and just above it does.
  assert matches((0, 5.01), (0, 10))


def test_loose_branch_boundaries():
  # IoU 0.3: only the loose branch can match.
  action = (0.0, 3.0)
  clip = (0.0, 10.0)
  assert iou(clip, action) == pytest.approx(0.3)
  assert matches(clip, action)
  # Start difference exactly 5 s fails (strict <); 4.99 s passes.
  assert 0.25 < iou((5.0, 16.0), (0.0, 12.0)) < 0.5
  assert not matches((5.0, 16.0), (0.0, 12.0))
  assert matches((4.99, 16.0), (0.0, 12.0))
  # Clip must end at or after the action's end: equal passes, earlier fails.
  assert iou((2.0, 4.0), (0.0, 4.0)) == 0.5 and matches((2.0, 4.0), (0.0, 4.0))
  assert not matches((2.0, 3.99), (0.0, 4.0))
  assert not matches((2.0, 6.0), (0.0, 12.0))  # IoU 1/3 but ends before the action.
  # Loose IoU exactly 0.25 fails; above it passes.
  assert iou((0.0, 8.0), (0.0, 2.0)) == 0.25
  assert not matches((0.0, 8.0), (0.0, 2.0))
  assert matches((0.0, 8.0), (0.0, 2.01))


def test_configurable_thresholds():
  # Appendix variant: loose IoU 0.2.
  assert matches((0.0, 8.0), (0.0, 1.8), MatchRule(loose_iou=0.2))
  assert not matches((0.0, 8.0), (0.0, 1.8))


def test_assignment_picks_best_iou():
  clips = [(0, 10), (10, 20), (50, 60)]
  actions = [(0, 9), (1, 11), (11, 21)]
  assert match_clips_to_actions(clips, actions) == [0, 2, None]
