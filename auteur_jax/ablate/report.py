"""A table's results -> DIR/<table>.json, a PNG chart, and DIR/REPORT.md over the tables.

Per variant and metric: mean +- 95 % interval over seeds (ablate/stats.py). Per claim and
metric: the paired difference (better - worse, sign-adjusted so that > 0 agrees with the
paper) and the verdict.
"""

from __future__ import annotations

import json
import math
import os

from PIL import Image, ImageDraw

from auteur_jax.ablate import stats
from auteur_jax.ablate.tables import METRICS, Table


def summarize(table: Table, per_seed: dict[str, dict[int, dict]], budget: dict) -> dict:
  """per_seed: variant -> seed -> metrics. Only seeds that every variant has count."""
  seeds = sorted(set.intersection(*(set(s) for s in per_seed.values()))) if per_seed else []
  variants = {}
  for v in table.variants:
    rows = per_seed.get(v.name, {})
    variants[v.name] = {
      "runs": list(v.runs),
      "measure": v.measure,
      "per_seed": {str(s): rows[s] for s in seeds},
      "metrics": {
        m: _interval([rows[s][m] for s in seeds if rows[s].get(m) is not None])
        for m in table.metrics
      },
    }
  claims = []
  for c in table.claims:
    by_metric: dict[str, dict] = {}
    for m in c.metrics:
      higher = METRICS[m][0]
      pairs = [
        (per_seed[c.better][s][m], per_seed[c.worse][s][m])
        for s in seeds
        if per_seed[c.better][s].get(m) is not None and per_seed[c.worse][s].get(m) is not None
      ]
      if not pairs:
        by_metric[m] = {"verdict": stats.OPEN, "difference": None}
        continue
      verdict, d = stats.verdict([a for a, _ in pairs], [b for _, b in pairs], higher)
      by_metric[m] = {"verdict": verdict, "difference": d._asdict(), "seeds": len(pairs)}
    claims.append(
      {
        "claim": c.text,
        "better": c.better,
        "worse": c.worse,
        "paper": c.paper,
        "metrics": by_metric,
      }
    )
  seconds = sum(r.get("seconds", 0.0) for v in per_seed.values() for s in seeds for r in [v[s]])
  return {
    "table": table.id,
    "title": table.title,
    "seeds": seeds,
    "budget": budget,
    "variants": variants,
    "claims": claims,
    "note": table.note,
    "measure_seconds": round(seconds, 1),
  }


def _interval(values: list[float]) -> dict | None:
  if not values:
    return None
  i = stats.interval(values)
  return {"mean": i.mean, "half": None if math.isnan(i.half) else i.half, "n": i.n}


def _fmt(cell: dict | None) -> str:
  if cell is None:
    return "-"
  half = cell["half"]
  return f"{cell['mean']:.3f}" + ("" if half is None else f" +- {half:.3f}")


def markdown(summary: dict, train_seconds: float) -> str:
  """One table's section of REPORT.md."""
  t = summary
  metrics = list(next(iter(t["variants"].values()))["metrics"]) if t["variants"] else []
  arrow = {m: "^" if METRICS[m][0] else "v" for m in metrics}
  lines = [
    f"## {t['title']}",
    "",
    f"Seeds: {len(t['seeds'])}. {_budget_text(t['budget'])} Machine time: "
    f"{(train_seconds + t['measure_seconds']) / 60:.0f} min "
    f"({train_seconds / 60:.0f} training, {t['measure_seconds'] / 60:.0f} rendering and scoring).",
    "",
    *([t["note"], ""] if t.get("note") else []),
    "| variant | " + " | ".join(f"{m} {arrow[m]}" for m in metrics) + " |",
    "|---|" + "---|" * len(metrics),
  ]
  for name, v in t["variants"].items():
    lines.append(f"| {name} | " + " | ".join(_fmt(v["metrics"][m]) for m in metrics) + " |")
  lines += [
    "",
    "| claim (paper) | metric | better - worse (95 % CI) | verdict |",
    "|---|---|---|---|",
  ]
  for c in t["claims"]:
    for m, r in c["metrics"].items():
      d = r["difference"]
      diff = "-" if d is None else _fmt({"mean": d["mean"], "half": _nan_none(d["half"])})
      lines.append(f"| {c['claim']} ({c['paper']}) | {m} | {diff} | {r['verdict']} |")
  return "\n".join(lines) + "\n"


def claims_table(summaries: list[dict]) -> str:
  """Every claim of the tables in one table: the paper's numbers and, per metric, our
  verdict with the paired difference (what README's table of findings shows)."""
  lines = [
    "## The paper's claims on the toy kitchen",
    "",
    "| table | claim | paper | ours: verdict per metric (better - worse, 95 % CI) | seeds |",
    "|---|---|---|---|---|",
  ]
  for t in summaries:
    for c in t["claims"]:
      cells = []
      for m, r in c["metrics"].items():
        d = r["difference"]
        diff = (
          "" if d is None else " (" + _fmt({"mean": d["mean"], "half": _nan_none(d["half"])}) + ")"
        )
        cells.append(f"{m}: {r['verdict']}{diff}")
      lines.append(
        f"| {t['table']} | {c['claim']} | {c['paper']} | {'; '.join(cells)} | {len(t['seeds'])} |"
      )
  return "\n".join(lines) + "\n"


KIND_TEXT = {
  "director": "director from scratch",
  "dit": "DiT fine-tuned from the shipped one",
  "keyframe": "renderer fine-tuned from the shipped one",
}


def _budget_text(b: dict) -> str:
  """A table's budget (experiment._budget_note) in words."""
  steps = b.get("steps", {})
  runs = "; ".join(f"{KIND_TEXT.get(k, k)}: {n} steps" for k, n in steps.items())
  return (
    f"Training per run: {runs or '-'}. Scored on {b.get('validation_stories')} validation "
    f"stories, {b.get('sample_steps')} flow steps per clip."
  )


def _nan_none(x: float) -> float | None:
  return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def chart(summary: dict, path: str) -> None:
  """A PNG with one bar panel per metric: the variants' means with their 95 % intervals."""
  variants = list(summary["variants"])
  metrics = list(summary["variants"][variants[0]]["metrics"]) if variants else []
  pw, ph, pad = 260, 220, 28
  img = Image.new("RGB", (max(1, len(metrics)) * pw, ph + 40 + 14 * len(variants)), "white")
  draw = ImageDraw.Draw(img)
  colours = [(66, 113, 174), (214, 110, 50), (90, 160, 90), (170, 80, 160), (120, 120, 120)]
  for i, m in enumerate(metrics):
    x0 = i * pw
    cells = [summary["variants"][v]["metrics"][m] for v in variants]
    hi = max([c["mean"] + (c["half"] or 0) for c in cells if c] + [1e-9])
    lo = min([c["mean"] - (c["half"] or 0) for c in cells if c] + [0.0])
    scale = (ph - 2 * pad) / (hi - lo or 1.0)
    base = ph - pad + lo * scale
    draw.text((x0 + 8, 4), f"{m} ({'higher' if METRICS[m][0] else 'lower'} is better)", "black")
    draw.line([(x0 + pad, base), (x0 + pw - 8, base)], "black")
    bw = (pw - pad - 16) / max(1, len(variants))
    for j, c in enumerate(cells):
      if c is None:
        continue
      bx = x0 + pad + j * bw + 4
      top = base - c["mean"] * scale
      draw.rectangle(
        [bx, min(top, base), bx + bw - 8, max(top, base)], fill=colours[j % len(colours)]
      )
      if c["half"]:
        cx = bx + (bw - 8) / 2
        y1, y2 = base - (c["mean"] + c["half"]) * scale, base - (c["mean"] - c["half"]) * scale
        draw.line([(cx, y1), (cx, y2)], "black")
        draw.line([(cx - 4, y1), (cx + 4, y1)], "black")
        draw.line([(cx - 4, y2), (cx + 4, y2)], "black")
      draw.text(
        (bx, max(top, pad) - 12 if c["mean"] >= 0 else base + 2), f"{c['mean']:.3g}", "black"
      )
  for j, v in enumerate(variants):
    y = ph + 8 + 14 * j
    draw.rectangle([8, y + 2, 18, y + 12], fill=colours[j % len(colours)])
    draw.text((24, y), v, "black")
  img.save(path)


def write_table(out: str, summary: dict, train_seconds: float) -> None:
  """DIR/<table>.json and DIR/<table>.png."""
  os.makedirs(out, exist_ok=True)
  tid = summary["table"]
  path = os.path.join(out, f"{tid}.json")
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump({**summary, "train_seconds": round(train_seconds, 1)}, f, indent=1)
  os.replace(tmp, path)
  chart(summary, os.path.join(out, f"{tid}.png"))
