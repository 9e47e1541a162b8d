"""One report as blocks, written both as Markdown (plots as PNG files) and as one self-contained HTML page.

The HTML page fetches nothing: its style sheet and its one small script are inline and every plot is a
base64 PNG in a ``data:`` URI. The script reports, once the page has loaded, how many images decoded
(``naturalWidth > 0``), how many tables there are and which script errors happened, in the
``#report-status`` element; the browser test reads it back.

Markdown written by other parts of alignlab (the demo's and the experiments' ``report.md``) becomes
HTML through markdown-it-py when it is installed (CommonMark plus tables, raw HTML off), with its
images embedded; without it the Markdown is shown as preformatted text and its images below it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.core.io import write_bytes, write_text

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{font-size:1.3rem;margin-top:2rem}
h3{font-size:1.1rem}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f2f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%;height:auto;display:block;margin:.6rem 0}
code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}\
pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}
.note{color:#555;font-size:.9rem}.missing{color:#a00}#report-status{color:#888;font-size:.75rem;margin-top:2rem}
"""

# Counts script errors from the first moment, then fills #report-status once everything has loaded.
_HEAD_SCRIPT = """
window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push(
  (e.message||\
('failed to load '+((e.target&&(e.target.src||e.target.href))||'a resource').slice(0,80))));},true);
(function(){var ce=console.error;console.error=function(){window.__reportErrors.push(
  Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};})();
window.addEventListener('load',function(){
  var imgs=Array.prototype.slice.call(document.images);
  var broken=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
  var s=document.getElementById('report-status');
  s.setAttribute('data-loaded','1');s.setAttribute('data-images',imgs.length);
  s.setAttribute('data-broken-images',broken.length);
  s.setAttribute('data-tables',document.getElementsByTagName('table').length);
  s.setAttribute('data-errors',window.__reportErrors.length);
  s.textContent='page check: '+(imgs.length-broken.length)+'/'+imgs.length+' images loaded, '+
    document.getElementsByTagName('table').length+' tables, '+window.__reportErrors.length+' script errors'+
    (window.__reportErrors.length?': '+window.__reportErrors.join(' | '):'');
});
"""

_NUMERIC = re.compile(r"^[+\-−]?[\d,.]+(?:\s*%)?(?:\s*\[[^\]]*\])?(?:\s*±\s*[\d.]+)?$")


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class Figure:
    """A plot: PNG bytes, a file name for the Markdown report's ``plots/`` and a caption."""

    png: bytes
    name: str
    caption: str


@dataclass
class Page:
    """The blocks of one report, in order; :meth:`write` emits ``report.md`` and ``report.html``."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str, note: bool = False) -> None:
        self.blocks.append(("para", (text, note)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def figure(self, fig: Figure | None) -> None:
        if fig is not None:
            self.blocks.append(("figure", fig))

    def markdown(self, text: str, base: Path) -> None:
        """Markdown from elsewhere; its relative image links are resolved against ``base``."""
        self.blocks.append(("markdown", (text, base)))

    # --- Markdown -----------------------------------------------------------------------------------

    def to_markdown(self, md_path: Path, plot_dir: Path | None = None) -> str:
        plot_dir = plot_dir or md_path.parent / "plots"
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value  # type: ignore[misc]
                lines += ["#" * level + " " + text, ""]
            elif kind == "para":
                lines += [value[0], ""]  # type: ignore[index]
            elif kind == "table":
                header, rows = value  # type: ignore[misc]
                lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif kind == "figure":
                fig: Figure = value  # type: ignore[assignment]
                path = plot_dir / fig.name
                write_bytes(path, fig.png)
                rel = path.relative_to(md_path.parent) if path.is_relative_to(md_path.parent) else path
                lines += [f"![{fig.caption}]({Path(rel).as_posix()})", ""]
            elif kind == "markdown":
                text, base = value  # type: ignore[misc]
                lines += [_shift_headings(_rebase_images(text, base, md_path.parent)), ""]
        return "\n".join(lines).rstrip() + "\n"

    # --- HTML ----------------------------------------------------------------------------------------

    def to_html(self) -> str:
        body: list[str] = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value  # type: ignore[misc]
                body.append(f"<h{level}>{_inline(text)}</h{level}>")
            elif kind == "para":
                text, note = value  # type: ignore[misc]
                body.append(f"<p{' class=note' if note else ''}>{_inline(text)}</p>")
            elif kind == "table":
                header, rows = value  # type: ignore[misc]
                body.append(_html_table(header, rows))
            elif kind == "figure":
                fig = value  # type: ignore[assignment]
                body.append(
                    f'<figure><img src="{png_data_uri(fig.png)}" alt="{html.escape(fig.caption)}">'
                    f"<figcaption class=note>{html.escape(fig.caption)}</figcaption></figure>"
                )
            elif kind == "markdown":
                text, base = value  # type: ignore[misc]
                body.append(markdown_to_html(_shift_headings(text), base))
        return (
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style>"
            f"<script>{_HEAD_SCRIPT}</script></head>\n<body>\n"
            + "\n".join(body)
            + "\n<div id=report-status>page check: not run (scripts off)</div>\n</body></html>\n"
        )

    def write(self, md_path: Path | None, html_path: Path) -> None:
        """Write the Markdown (unless ``md_path`` is None) and the HTML page."""
        if md_path is not None:
            write_text(md_path, self.to_markdown(md_path))
        write_text(html_path, self.to_html())


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Escaped text with Markdown's inline code and bold kept."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_inline(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if _NUMERIC.match(str(c).strip()) else ''}>{_inline(str(c))}</td>" for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_IMG = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _shift_headings(text: str) -> str:
    """A foreign report's ``# title`` becomes a section (``##``) of this page; deeper levels follow."""
    return re.sub(r"^(#{1,5}) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


def _rebase_images(text: str, base: Path, target: Path) -> str:
    """Image links relative to ``base`` rewritten relative to ``target`` (or absolute)."""

    def fix(m: re.Match[str]) -> str:
        src = m.group(2)
        if "://" in src or src.startswith(("/", "data:")):
            return m.group(0)
        path = (base / src).resolve()
        try:
            rel = path.relative_to(target.resolve()).as_posix()
        except ValueError:
            rel = path.as_posix()
        return f"![{m.group(1)}]({rel})"

    return _IMG.sub(fix, text)


def _image_src(src: str, base: Path) -> str | None:
    """A local image as a data URI; ``None`` when it is missing, remote or not a PNG/JPEG/SVG/GIF."""
    if src.startswith("data:"):
        return src
    if "://" in src:
        return None  # a network fetch: never from a report
    path = Path(src) if Path(src).is_absolute() else base / src
    kinds = {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".gif": "image/gif",
        ".svg": "image/svg+xml",
    }
    mime = kinds.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(text: str, base: Path) -> str:
    """Markdown (CommonMark + tables) as HTML with local images embedded; missing ones named in red."""
    try:
        from markdown_it import MarkdownIt
    except ModuleNotFoundError:
        return _markdown_fallback(text, base)
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(renderer, tokens, idx, options, env):  # noqa: ANN001 - markdown-it's renderer rule signature
        tok = tokens[idx]
        alt = html.escape(tok.content or "")
        src = _image_src(tok.attrGet("src") or "", base)
        if src is None:
            return f"<span class=missing>[image not found: {html.escape(tok.attrGet('src') or '')}]</span>"
        return f'<img src="{src}" alt="{alt}">'

    md.add_render_rule("image", image)
    out = md.render(text)
    # Number cells right-aligned, as in the tables this module builds itself.
    return re.sub(
        r"<td>([^<]*)</td>",
        lambda m: (
            f"<td class=num>{m.group(1)}</td>"
            if _NUMERIC.match(html.unescape(m.group(1)).strip())
            else m.group(0)
        ),
        out,
    )


def _markdown_fallback(text: str, base: Path) -> str:
    parts = [f"<pre>{html.escape(text)}</pre>"]
    for alt, src in _IMG.findall(text):
        uri = _image_src(src, base)
        parts.append(
            f'<img src="{uri}" alt="{html.escape(alt)}">'
            if uri
            else f"<p class=missing>[image not found: {html.escape(src)}]</p>"
        )
    return "\n".join(parts)
