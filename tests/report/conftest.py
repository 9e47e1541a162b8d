"""Folders of every kind ``alignlab report`` understands, small and fast, plus a headless-browser driver.

The synthetic folders follow the files alignlab writes (results.json, log.jsonl, aggregate.json,
seed-*/, an experiment's report.md and plots, the demo's report.md); the probe folder is a real
``probe build`` + ``probe eval`` run on 70 ShapesWorld items.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from alignlab.core.io import write_json

RK = {
    "i2t_R@1": 13.459999999999999,
    "i2t_R@5": 40.666666666666664,
    "i2t_R@10": 48.0,
    "t2i_R@1": 11.066666666666666,
    "t2i_R@5": 28.799999999999997,
    "t2i_R@10": 39.2,
}


def run_metrics(shift: float = 0.0) -> dict[str, float]:
    m = {k: v + shift for k, v in RK.items()}
    m["rsum"] = sum(m.values())
    m.update(
        {
            "i2t_medr": 12.0,
            "i2t_meanr": 19.313333333333333,
            "t2i_medr": 19.0,
            "t2i_meanr": 50.992,
            "i2t_tied_queries": 0,
            "t2i_tied_queries": 3,
        }
    )
    return m


def write_log(run: Path, losses: list[float], devs: list[float], interval_mean: bool = True) -> None:
    lines = []
    for i, loss in enumerate(losses):
        rec = {"step": 10 * (i + 1), "epoch": i // 2, "contrastive_loss": loss, "loss": loss}
        if interval_mean:
            rec.update(lr=0.001, samples_s=200.0)
        lines.append(rec)
        if i % 2 == 1:
            lines.append(
                {
                    "step": 10 * (i + 1),
                    "epoch": i // 2,
                    "dev": {"rsum": devs[i // 2], "i2t_R@1": devs[i // 2] / 6},
                }
            )
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 99, "lo', encoding="utf-8"
    )


def make_run(run: Path, seed: int = 0, shift: float = 0.0, interval_mean: bool = True) -> Path:
    write_json(
        run / "results.json",
        {
            "task": "retrieval",
            "model": "tiny-dual",
            "data": "shapes-test:300",
            "seed": seed,
            "metrics": run_metrics(shift),
            "best": {"epoch": 1, "metric": "rsum", "value": 216.6},
            "steps": 40,
            "manifest": {
                "alignlab": "0.1.0",
                "torch": "2.13.0",
                "device": "cpu",
                "wall_s": 11.479999999999999,
            },
        },
    )
    write_log(
        run, [4.2 - 0.3 * i - shift / 100 for i in range(4)], [200.0 + shift, 216.6 + shift], interval_mean
    )
    return run


@pytest.fixture
def run_folder(tmp_path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture
def seeds_folder(tmp_path) -> Path:
    """A repro folder: seed-0..2 runs and aggregate.json as `repro run` writes it (metrics in text order)."""
    from alignlab.retrieval.repro import aggregate_results

    folder = tmp_path / "repro"
    results = [
        json.loads((make_run(folder / f"seed-{s}", seed=s, shift=s) / "results.json").read_text())
        for s in range(3)
    ]
    results[0]["metrics"]["t2i_tied_queries"] = 0
    results[1]["metrics"]["t2i_tied_queries"] = 0
    results[2]["metrics"]["t2i_tied_queries"] = 1  # mean 1/3, sd 0.58: the t-interval reaches below 0
    agg = aggregate_results(results)
    agg["sanity"] = {
        "oracle": {k: 100.0 for k in RK} | {"rsum": 600.0},
        "oracle_ok": True,
        "chance": {k: 2.0 * int(k.split("@")[1]) for k in RK},
        "random_ok": False,
    }
    write_json(folder / "aggregate.json", agg)
    return folder


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory) -> Path:
    """A real probe run: 70 ShapesWorld items scored by an untrained tiny dual encoder, 3 blind baselines."""
    from alignlab.cli import main

    root = tmp_path_factory.mktemp("probe")
    assert (
        main(
            [
                "probe",
                "build",
                "--source",
                "shapes",
                "--out",
                str(root / "items"),
                "--items-per-category",
                "5",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "probe",
                "eval",
                "--items",
                str(root / "items"),
                "--model",
                "tiny-dual",
                "--out",
                str(root / "run"),
                "--bootstrap",
                "200",
                "--baselines",
                "null_image,never_not,shorter",
                "--quiet",
            ]
        )
        == 0
    )
    return root / "run"


def png_bytes(color: str = "#4C72B0") -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.bar([0, 1], [1, 2], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@pytest.fixture
def experiment_folder(tmp_path) -> Path:
    """An experiment folder: results.json with verdicts, report.md with a claim table, two plots."""
    folder = tmp_path / "experiment-pesf"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "pesf_digits.png").write_bytes(png_bytes())
    (folder / "plots" / "extra_diagnostics.png").write_bytes(png_bytes("#C44E52"))
    write_json(
        folder / "results.json",
        {
            "experiment": "pesf",
            "quick": True,
            "seeds": [0, 1],
            "verdicts": {
                "digits": {
                    "pesf_beats_kd": {
                        "claim": "PESF-KD beats vanilla KD",
                        "holds": False,
                        "verdict": "not significant: +0.4 [-1.2, +2.0] points",
                    },
                    "teacher_frozen": {
                        "claim": "the teacher stays bit-identical",
                        "holds": True,
                        "verdict": "0 bytes changed",
                    },
                }
            },
        },
    )
    (folder / "report.md").write_text(
        "# PESF-KD experiment\n\n| claim | delta | verdict |\n|---|---|---|\n"
        "| PESF-KD beats vanilla KD | +0.4 | not significant |\n\n![digits](plots/pesf_digits.png)\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture
def demo_folder(tmp_path) -> Path:
    """A demo folder as `alignlab demo` leaves it: report.md with every stage, a picture, two trained runs."""
    folder = tmp_path / "demo-out"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "contact_sheet.png").write_bytes(png_bytes())
    make_run(folder / "retrieval" / "tiny-dual")
    make_run(folder / "dcd" / "dcd", shift=1.0)
    make_run(folder / "dcd" / "no-kd", shift=-1.0)
    (folder / "report.md").write_text(
        "# alignlab demo\n\nSettings: quick, seed 0.\n\n## ShapesWorld data\n\n"
        "| split | images |\n|---|---|\n| train | 1200 |\n\n"
        "![contact sheet](data/contact_sheet.png)\n\n## Image–text retrieval\n\n"
        "| direction | R@1 |\n|---|---|\n| i2t | 15.3 |\n\n## DCD\n\nTwo students.\n\n## Timings\n\n"
        "| stage | seconds |\n|---|---|\n| total | 9.0 |\n",
        encoding="utf-8",
    )
    return folder


# --- a headless browser, driven through its command line ----------------------------------------------------

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    # A page that tries the network fails visibly instead of fetching: nothing resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
]


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class _PageFacts(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] = {}
        self.status_text = ""
        self._in_status = False
        self.tables = 0
        self.images = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "report-status":
            self.status, self._in_status = {k: v or "" for k, v in a.items()}, True
        self.tables += tag == "table"
        self.images += tag == "img"

    def handle_endtag(self, tag):
        if tag == "div":
            self._in_status = False

    def handle_data(self, data):
        if self._in_status:
            self.status_text += data


class Browser:
    """Chromium in headless mode: the DOM after load (with the page's own check), console lines,
    screenshots."""

    def __init__(self, exe: str, work: Path) -> None:
        self.exe, self.work = exe, work

    def _run(self, url: str, extra: list[str], name: str) -> subprocess.CompletedProcess:
        profile = self.work / f"profile-{name}"  # a fresh profile for every launch
        cmd = [
            self.exe,
            *BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            *extra,
            url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def load(self, page: Path) -> tuple[_PageFacts, list[str]]:
        """Parse the DOM after load; the console messages (Chromium logs each as a CONSOLE line)."""
        proc = self._run(page.resolve().as_uri(), ["--dump-dom"], "dom")
        assert proc.returncode == 0, proc.stderr[-2000:]
        facts = _PageFacts()
        facts.feed(proc.stdout)
        console = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
        return facts, console

    def screenshot(self, page: Path, out: Path, size: str = "1200,2400") -> Path:
        proc = self._run(page.resolve().as_uri(), [f"--screenshot={out}", f"--window-size={size}"], "shot")
        assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
        return out


@pytest.fixture
def browser(tmp_path) -> Browser:
    exe = find_browser()
    if exe is None:
        pytest.skip(
            "no headless Chromium here (Debian: apt-get install chromium; `make` installs it as root)"
        )
    return Browser(exe, tmp_path)
