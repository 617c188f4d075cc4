"""Reports: a self-contained HTML page for `compare`, a PNG plot for `shift`."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def compare_html(title: str, summaries: dict[str, dict[str, dict[str, float]]],
                 rows: dict[str, list[dict[str, Any]]]) -> str:
    names = list(summaries)
    first = summaries[names[0]]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    summary_rows = []
    for group, stats in first.items():
        for metric in stats:
            cells = "".join(f"<td>{summaries[n].get(group, {}).get(metric, float('nan')):.3f}</td>" for n in names)
            summary_rows.append(f"<tr><td>{html.escape(group)}</td><td>{html.escape(metric)}</td>{cells}</tr>")
    response_rows = []
    for i, row in enumerate(rows[names[0]]):
        cells = []
        for n in names:
            r = rows[n][i]
            tag = '<span class="refused">refuses</span> ' if r["refused"] else ""
            cells.append(f"<td>{tag}{html.escape(r['response'])}<div class='meta'>KL {r['kl']:.2f}"
                         f"{' · reward %.2f' % r['reward'] if 'reward' in r else ''}</div></td>")
        label = f"<div class='meta'>{html.escape(str(row.get('label', '')))}</div>" if "label" in row else ""
        response_rows.append(f"<tr><td>{html.escape(row['prompt'])}{label}</td>{''.join(cells)}</tr>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ppo-term compare: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .4rem .6rem; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }}
td {{ max-width: 40rem; white-space: pre-wrap; }}
.meta {{ color: #777; font-size: .85em; margin-top: .3rem; }}
.refused {{ background: #fdd; color: #900; padding: 0 .3rem; border-radius: .2rem; }}
</style></head><body>
<h1>ppo-term compare: {html.escape(title)}</h1>
<h2>Summary</h2>
<table><tr><th>group</th><th>metric</th>{head}</tr>{''.join(summary_rows)}</table>
<h2>Responses</h2>
<table><tr><th>prompt</th>{head}</tr>{''.join(response_rows)}</table>
</body></html>
"""


def shift_png(result: dict[str, Any], out: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--png needs matplotlib: pip install matplotlib") from None
    pos = result["positions"]
    xs = [p["position"] for p in pos]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.35 * len(xs)), 6), sharex=True)
    ax1.bar(xs, [p["kl"] for p in pos], color="#c0392b")
    ax1.set_ylabel("KL(tuned || base)")
    ax1.set_title(f"prompt: {result['prompt'][:80]}")
    ax2.plot(xs, [p["entropy_base"] for p in pos], label="base", color="#2c3e50")
    ax2.plot(xs, [p["entropy_tuned"] for p in pos], label="tuned", color="#c0392b")
    ax2.set_ylabel("entropy (nats)")
    ax2.legend()
    ax2.set_xticks(xs)
    ax2.set_xticklabels([p["token"] for p in pos], rotation=70, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
