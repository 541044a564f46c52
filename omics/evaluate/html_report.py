"""One self-contained `report.html` per results folder, and `comparison.html` for `omics compare`.

The page shows what the folder holds: the evaluation's tables (its own Markdown, rendered), the plots (PNG
data URIs), Stage 1's likelihood, the training run, its parameters and data report. No external assets and
no JavaScript, so it reads offline in any browser. It is derived from the results files, which are written
first: a failure here is logged and never loses them.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omics import __version__
from omics.evaluate.report import write_text

if TYPE_CHECKING:
    from omics.evaluate.plots import Plot

log = logging.getLogger("omics")
REPORT = "report.html"
COMPARISON = "comparison.html"
FLATTEN_DEPTH = 2  # nested keys shown as rows down to this depth (config.learning_rate); deeper as JSON
FOLDED_CHARS = 160  # longer values are folded (<details>)
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:90em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
blockquote{border-left:4px solid #c00;margin:.5em 0;padding:.2em 1em;background:#fff4f4}
img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{color:#666;font-size:.9em}
pre{white-space:pre-wrap;margin:0}nav a{margin-right:1em}.meta{color:#666}"""
_SEPARATOR = re.compile(r"^:?-+:?$")
_INLINE = ((re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"`([^`]+)`"), r"<code>\1</code>"))


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]


def _md_table(lines: list[str]) -> str:
    head, *body = lines
    right: list[bool] = []
    if body and all(_SEPARATOR.match(c) for c in _cells(body[0])):
        right = [c.endswith(":") for c in _cells(body.pop(0))]
    rows = [f"<tr>{''.join(f'<th>{_inline(c)}</th>' for c in _cells(head))}</tr>"]
    numeric = ' class="num"'
    for line in body:
        rows.append("<tr>" + "".join(f"<td{numeric if i < len(right) and right[i] else ''}>{_inline(c)}</td>"
                                     for i, c in enumerate(_cells(line))) + "</tr>")
    return f"<table>{''.join(rows)}</table>"


def _kind(line: str) -> str:
    for prefix, kind in (("|", "table"), ("- ", "list"), ("> ", "quote"), ("#", "heading")):
        if line.startswith(prefix):
            return kind
    return "text" if line.strip() else "blank"


def markdown_html(text: str) -> str:
    """The Markdown omics writes (metrics.md, likelihood.md, comparison.md) as HTML: headings, pipe tables,
    lists, block quotes (the red-letter warnings) and paragraphs."""
    parts = []
    for kind, group in itertools.groupby(text.splitlines(), key=_kind):
        lines = list(group)
        if kind == "table":
            parts.append(_md_table(lines))
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        elif kind == "quote":
            parts.append("<blockquote>" + "<br>".join(_inline(line[2:]) for line in lines) + "</blockquote>")
        elif kind == "heading":
            for line in lines:
                level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # below the page's h1 and sections' h2
                parts.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif kind == "text":
            parts.append("<p>" + "<br>".join(_inline(line) for line in lines) + "</p>")
    return "\n".join(parts)


def _flat(value: Any, key: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value and depth < FLATTEN_DEPTH:
        for k, v in value.items():
            yield from _flat(v, f"{key}.{k}" if key else str(k), depth + 1)
    else:
        yield key, value


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= FOLDED_CHARS:
        return html.escape(text, quote=False)
    full = value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False, default=str)
    return (f"<details><summary>{html.escape(text[:80], quote=False)}…</summary>"
            f"<pre>{html.escape(full, quote=False)}</pre></details>")


def json_table(document: dict[str, Any]) -> str:
    """A JSON document as one two-column table (nested keys as dotted names, long values folded)."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_value(v)}</td></tr>" for k, v in _flat(document))
    return f"<table>{rows}</table>"


def _figures(plots: list[Plot]) -> str:
    return "\n".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.png).decode()}" width="{p.width}" '
        f'height="{p.height}" alt="{html.escape(p.title)}"><figcaption>{html.escape(p.title)} '
        f"(plots/{p.name}.png)</figcaption></figure>" for p in plots)


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """The whole page: a table of contents, then each (heading, HTML body) section."""
    anchors = [re.sub(r"\W+", "-", heading.lower()).strip("-") for heading, _ in sections]
    nav = " ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, (h, _) in zip(anchors, sections, strict=True))
    body = "\n".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>\n{content}\n</section>'
                     for a, (h, content) in zip(anchors, sections, strict=True))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="meta">omics {__version__}, {time.strftime("%Y-%m-%d %H:%M:%S %Z")}</p>\n'
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def _markdown(path: Path) -> str | None:
    return markdown_html(path.read_text(encoding="utf-8")) if path.is_file() else None


def _document(path: Path, drop: tuple[str, ...] = ()) -> str | None:
    if not path.is_file():
        return None
    return json_table({k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k not in drop})


def _settings(folder: Path) -> str | None:
    """What the evaluations in the folder ran on (their `meta`), the per-task specs left out."""
    tables = []
    for name in ("metrics.json", "likelihood.json"):
        if (folder / name).is_file():
            meta = json.loads((folder / name).read_text(encoding="utf-8"))["meta"]
            tables.append(f"<h3>{name}</h3>" + json_table({k: v for k, v in meta.items() if k != "task_specs"}))
    return "\n".join(tables) or None


def _publish(folder: Path, name: str, title: str, plots: list[Plot], sections: list[tuple[str, str | None]],
             tag: str) -> Path:
    from omics.evaluate.plots import write_plots

    plots_dir = write_plots(folder, plots, tag)
    shown = [(heading, body) for heading, body in sections if body]
    shown.insert(min(1, len(shown)), ("Plots", _figures(plots)))
    write_text(folder / name, page(title, shown))
    log.info("report: %s; plots: %s", folder / name, plots_dir)
    return folder / name


def _safely(write, folder: Path) -> Path | None:
    """A plot or page that fails is logged, never raised: the results files it reads are already written,
    and an error here would make the command's --overwrite put the previous results back."""
    try:
        return write()
    except Exception as err:  # any failure: see the docstring
        log.warning("%s: the results are written, but their plots/report failed: %s: %s", folder,
                    type(err).__name__, err)
        log.debug("plots/report failure", exc_info=True)
        return None


def write_report(folder: Path) -> Path | None:
    """`report.html` and `plots/` for everything a results folder holds (a Stage 1 folder may hold the
    likelihood and a Stages 2-3 evaluation of the Stage 1 model): one call after each evaluation."""
    from omics.evaluate.plots import folder_plots

    folder = Path(folder)

    def write() -> Path:
        tag = json.loads((folder / "metrics.json").read_text())["meta"]["tag"] if (
            folder / "metrics.json").is_file() else "likelihood"
        # a mode's folder (metrics/stage3/direct) is named with its stage's
        name = f"{folder.parent.name}/{folder.name}" if (folder.parent / "metrics.json").is_file() else folder.name
        return _publish(folder, REPORT, f"omics report: {name}", folder_plots(folder), [
            ("Evaluation", _markdown(folder / "metrics.md")),
            ("Comparison with earlier stages", _markdown(folder / "comparison.md")),
            ("Stage 1 likelihood", _markdown(folder / "likelihood.md")),
            ("Evaluation settings", _settings(folder)),
            ("Training run", _document(folder / "run_summary.json", drop=("log_history",))),
            ("Parameters", _document(folder / "parameters.json")),
            ("Data report", _document(folder / "data_report.json")),
        ], tag)

    return _safely(write, folder)


def write_comparison_report(root: Path, table: str, docs: dict[str, dict[str, Any]],
                            metrics_root: Path | None = None) -> Path | None:
    """`comparison.html` and `plots/` beside comparison.md in `root`: the comparison tables, the per-task bars of
    every stage, the paper table beside the paper's numbers, and links to each stage's own report (under
    `metrics_root`, default `root`)."""
    import os

    from omics.evaluate.plots import score_bars

    root = Path(root)
    stages = Path(metrics_root or root)

    def write() -> Path:
        reports = {label: stages / label.replace(" ", "/") / REPORT for label in docs}  # "stage3 direct": its folder
        links = "".join(f'<li><a href="{os.path.relpath(path, root)}">{label}</a></li>'
                        for label, path in reports.items() if path.is_file())
        return _publish(root, COMPARISON, f"omics comparison: {', '.join(docs)}", score_bars(docs), [
            ("Comparison", markdown_html(table)),
            ("Stage reports", f"<ul>{links}</ul>" if links else None),
        ], "comparison")

    return _safely(write, root)
