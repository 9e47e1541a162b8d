"""Commands that need an optional extra, and the extra their one-line error must name.

Shared by tests/test_packaging.py (the extra's packages hidden in this environment) and
tests/test_wheel_core_only.py (the built wheel with the core dependencies only). ``{tmp}`` is a scratch
folder; ``{tmp}/out`` must never be created, because the check comes before any work.
"""

EXTRA_CASES = [
    (["report", "{tmp}/run"], "report"),
    (
        ["probe", "eval", "--items", "{tmp}/items.jsonl", "--model", "tiny-dual", "--out", "{tmp}/out"],
        "probe",
    ),
    (["ambiguity", "wsd", "the bat flew", "bat"], "ambiguity"),
    (["mmt", "train", "--out", "{tmp}/out"], "mmt"),
    (["mmt", "eval", "--run", "{tmp}/out"], "mmt"),
    (
        [
            "commonit",
            "group",
            "{tmp}/in.jsonl",
            "--out",
            "{tmp}/out",
            "--metric",
            "embedding",
            "--encoder",
            "tfidf",
        ],
        "commonit",
    ),
    (["commonit", "train", "{tmp}/in.jsonl", "--out", "{tmp}/out"], "hf"),
    (["distill", "pesf", "train", "--out", "{tmp}/out"], "pesf"),
    (["eval", "retrieval", "--model", "hf:{tmp}/clip", "--protocol", "shapes-1k"], "hf"),
    (["eval", "retrieval", "--model", "open_clip:ViT-B-32@none", "--protocol", "shapes-1k"], "openclip"),
    (["experiment", "pesf", "--quick", "--out", "{tmp}/out"], "pesf"),
    (["experiment", "snare", "--quick", "--out", "{tmp}/out"], "probe"),
    (["demo", "--quick", "--out", "{tmp}/out"], "demo"),
    (["eval", "retrieval", "--model", "tiny-dual", "--protocol", "shapes-1k", "--engine", "ray"], "scale"),
    (["distill", "dcd", "mine", "--out", "{tmp}/out", "--ray-address", "127.0.0.1:1"], "scale"),
    (["eval", "retrieval", "--model", "pretrained-lit", "--protocol", "shapes-1k"], "pretrained"),
]
