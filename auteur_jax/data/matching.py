"""Caption-action matching by time (CookGen's rule).

A clip (a captioned time range) matches an action (an annotated or ASR time range) when
  IoU > `iou`, or
  |clip.start - action.start| < `max_start_diff` and clip.end >= action.end and IoU > `loose_iou`.
The paper's text gives 0.5 / 5 s / 0.25; its appendix pseudo-code uses 0.2 for the loose IoU.
Times are in seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

Span = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class MatchRule:
  """Thresholds of the matching rule (seconds for max_start_diff)."""

  iou: float = 0.5
  loose_iou: float = 0.25
  max_start_diff: float = 5.0


def iou(a: Span, b: Span) -> float:
  """Temporal intersection over union of two [start, end] spans (0 if disjoint)."""
  inter = min(a[1], b[1]) - max(a[0], b[0])
  if inter <= 0:
    return 0.0
  union = max(a[1], b[1]) - min(a[0], b[0])
  return inter / union


def matches(clip: Span, action: Span, rule: MatchRule = MatchRule()) -> bool:
  """Whether `clip` matches `action` under `rule` (strict inequalities as in the paper)."""
  o = iou(clip, action)
  if o > rule.iou:
    return True
  return (
    abs(clip[0] - action[0]) < rule.max_start_diff and clip[1] >= action[1] and o > rule.loose_iou
  )


def match_clips_to_actions(
  clips: Sequence[Span], actions: Sequence[Span], rule: MatchRule = MatchRule()
) -> list[int | None]:
  """For each clip, the index of its matched action (highest IoU among matches) or None.

  An action may serve several clips (a long step covered by two captioned clips).
  """
  out: list[int | None] = []
  for c in clips:
    best, best_iou = None, -1.0
    for j, a in enumerate(actions):
      if matches(c, a, rule):
        o = iou(c, a)
        if o > best_iou:
          best, best_iou = j, o
    out.append(best)
  return out
