"""What commands print for a reader: rounded tables, never float noise or a bare NaN."""

from __future__ import annotations

import re

# Float representation noise (13.459999999999999): far more decimals than any table rounds to.
NOISE = re.compile(r"\d+\.\d{7,}")


def test_eval_retrieval_with_a_protocol_prints_the_same_rounded_table_as_with_data():
    """A 2-fold protocol whose mean metrics carry float noise prints the --data table, rounded."""
    import numpy as np

    from alignlab.retrieval.cli import _format_eval
    from alignlab.retrieval.metrics import evaluate_embeddings
    from alignlab.retrieval.protocols import ProtocolReport

    rng = np.random.default_rng(0)
    folds = [
        evaluate_embeddings(
            rng.normal(size=(7, 4)),
            rng.normal(size=(21, 4)),
            [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(7)],
        )
        for _ in range(2)
    ]
    mean = {k: (folds[0].metrics[k] + folds[1].metrics[k]) / 2 for k in folds[0].metrics}
    mean["i2t_meanr"] = 13.459999999999999
    report = ProtocolReport(
        "toy-2fold",
        "",
        mean,
        folds,
        [np.arange(21)] * 2,
        {},
        ceilings={"truth": {"rsum": 600.0, "i2t_R@1": 100.0}},
        relevance="truth",
    )
    out = _format_eval(report)
    assert out.startswith("toy-2fold (truth labels, mean over 2 folds)")
    assert out.splitlines()[2:4] == folds[0].format().splitlines()[:2]  # the --data table's header
    r_rows = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| R@")]
    assert r_rows == ["| R@1", "| R@5", "| R@10"]
    assert "| meanr | 13.46 |" in out and "perfect ranker under truth labels" in out
    assert not NOISE.search(out) and "{" not in out  # no raw JSON
    assert _format_eval(folds[0]) == folds[0].format()  # --data: unchanged


def test_mmt_metrics_print_n_a_with_the_reason_instead_of_a_bare_nan(capsys):
    from alignlab.mmt.cli import _print_metrics

    _print_metrics(
        {
            "n": 4,
            "bleu": 12.345678,
            "sense_acc": float("nan"),
            "contrastive_acc": float("nan"),
            "bleu_signature": "nrefs:1",
        }
    )
    out = capsys.readouterr().out
    assert "NaN" not in out and "nan" not in out.lower().replace("n/a", "")
    assert '"bleu": 12.3457' in out and '"sense_acc": "n/a"' in out
    assert "sense_acc: n/a (no test caption has an ambiguous word with a sense label)" in out
    assert "contrastive_acc: n/a (no contrastive items" in out
