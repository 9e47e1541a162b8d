"""WordNet 3.0, offline: through NLTK's data path, or built from Debian's ``wordnet-base`` files.

Two routes lead to the same NLTK ``WordNetCorpusReader``:

1. **NLTK data** — a ``corpora/wordnet`` folder (or ``wordnet.zip``) on ``nltk.data.path``, as
   ``nltk.download("wordnet")`` leaves it. Used first when present.
2. **Debian files** — ``apt-get install wordnet-base wordnet-sense-index`` puts the WordNet 3.0 database
   in ``/usr/share/wordnet`` (or ``$ALIGNLAB_WORDNET_DIR``). NLTK cannot read that folder as it is: it
   refuses paths outside its data roots (symbolic links included), the Debian package lacks the
   ``lexnames`` file NLTK opens at start, and ``index.sense`` must sit beside the data files. So the
   files are *copied* once into ``<cache>/nltk_data/corpora/wordnet`` (cache: ``$ALIGNLAB_CACHE`` or
   ``~/.cache/alignlab``), ``lexnames`` is written from the lexnames(5WN) list, and the folder is put in
   place with one atomic rename (two processes building it at once cannot leave half a folder).

The reader is loaded once per process (:func:`get_wordnet`); later calls return the same object.
When neither route is available a :class:`~alignlab.core.errors.DependencyError` names both fixes.

>>> wn = get_wordnet()                                   # doctest: +SKIP
>>> [s.name() for s in wn.synsets("bat", "n")][:2]       # doctest: +SKIP
['bat.n.01', 'bat.n.02']
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from alignlab.core.errors import DependencyError

DEBIAN_DIR = Path("/usr/share/wordnet")

# The 45 lexicographer files of WordNet 3.0 in file-number order, with the part of speech number each
# belongs to (1 noun, 2 verb, 3 adjective, 4 adverb) — the list of the lexnames(5WN) manual page.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

# Files NLTK's reader opens; all but ``lexnames`` come from the Debian packages.
REQUIRED_FILES = (
    "index.noun",
    "index.verb",
    "index.adj",
    "index.adv",
    "data.noun",
    "data.verb",
    "data.adj",
    "data.adv",
    "noun.exc",
    "verb.exc",
    "adj.exc",
    "adv.exc",
    "index.sense",
)
OPTIONAL_FILES = ("cntlist.rev",)  # sense frequency counts (Lemma.count()); absent -> counts are 0

INSTALL_FIX = (
    "install WordNet 3.0 by one of two routes: with internet, "
    "`python -c \"import nltk; nltk.download('wordnet')\"`; or on Debian/Ubuntu, "
    "`apt-get install wordnet-base wordnet-sense-index` (files in /usr/share/wordnet; "
    "or point ALIGNLAB_WORDNET_DIR at a folder holding them)"
)

_lock = threading.Lock()
_reader: Any = None
_source: str | None = None


def lexnames_text() -> str:
    """The ``lexnames`` file NLTK expects: ``NN<TAB>name<TAB>pos`` per line, 45 lines."""
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))


def cache_dir() -> Path:
    """alignlab's cache folder: ``$ALIGNLAB_CACHE``, else ``$XDG_CACHE_HOME/alignlab``, else
    ``~/.cache/alignlab``."""
    if os.environ.get("ALIGNLAB_CACHE"):
        return Path(os.environ["ALIGNLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignlab"


def debian_dir() -> Path:
    return Path(os.environ.get("ALIGNLAB_WORDNET_DIR") or DEBIAN_DIR)


def _missing(folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def build_nltk_data(source: Path | None = None, target_root: Path | None = None) -> Path:
    """Copy the Debian WordNet files into an NLTK data folder; returns that data root.

    ``<target_root>/corpora/wordnet`` receives copies of the database files and a generated
    ``lexnames``. The folder is assembled under a temporary name and renamed into place, so it is either
    complete or absent. An existing complete folder is reused.
    """
    source = Path(source) if source is not None else debian_dir()
    target_root = Path(target_root) if target_root is not None else cache_dir() / "nltk_data"
    final = target_root / "corpora" / "wordnet"
    if not _missing(final) and (final / "lexnames").is_file():
        return target_root
    missing = _missing(source)
    if missing:
        raise DependencyError(
            f"WordNet 3.0 files missing: {', '.join(missing)}", where=str(source), fix=INSTALL_FIX
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet.", dir=final.parent))
    try:
        for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
            src = source / name
            if src.is_file():
                # Copies, not links: NLTK rejects paths that resolve outside its data root.
                shutil.copyfile(src, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text(), encoding="ascii")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first (the target exists and is not empty): use its copy.
            if _missing(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target_root


def _nltk():
    try:
        import nltk  # noqa: F401
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        raise DependencyError(
            "NLTK is not installed (needed for WordNet)",
            fix="pip install 'alignlab[nlp]' (or pip install nltk)",
        ) from None
    return WordNetCorpusReader


def _nltk_route() -> Path | None:
    """The folder of an NLTK-installed WordNet (plain folder), if any; zips are left to nltk.corpus."""
    import nltk

    for name in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            ptr = nltk.data.find(name)
        except LookupError:
            continue
        return Path(str(ptr)) if name == "corpora/wordnet" else Path("zip")
    return None


def _open_reader(root: Path):
    WordNetCorpusReader = _nltk()
    with warnings.catch_warnings():
        # "The multilingual functions are not available": only English WordNet is used here.
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(str(root), None)


def get_wordnet(source: Path | None = None, *, refresh: bool = False):
    """The process-wide NLTK WordNet reader (loaded on first use, a few seconds; then cached).

    ``source`` forces the Debian route from that folder (tests use it); otherwise NLTK's data path is
    tried first and Debian's files second.
    """
    global _reader, _source
    with _lock:
        if _reader is not None and not refresh and source is None:
            return _reader
        import nltk

        _nltk()
        route = None if source is not None else _nltk_route()
        if route == Path("zip"):
            from nltk.corpus import wordnet as wn

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wn.ensure_loaded()
            reader, where = wn, "nltk data (wordnet.zip)"
        elif route is not None:
            reader, where = _open_reader(route), f"nltk data ({route})"
        else:
            src = Path(source) if source is not None else debian_dir()
            if _missing(src):
                raise DependencyError(
                    "WordNet 3.0 not found (neither NLTK data nor Debian files)",
                    where=f"nltk.data.path and {src}",
                    fix=INSTALL_FIX,
                )
            root = build_nltk_data(src)
            if str(root) not in nltk.data.path:
                # Lets plain `from nltk.corpus import wordnet` work in this process too.
                nltk.data.path.append(str(root))
            reader, where = _open_reader(root / "corpora" / "wordnet"), f"debian files ({src}) via {root}"
        if source is None:
            _reader, _source = reader, where
        return reader


def wordnet_source() -> str | None:
    """Where the cached reader came from (None before the first :func:`get_wordnet`)."""
    return _source


def wordnet_available() -> bool:
    """True when :func:`get_wordnet` would succeed without building anything that can fail."""
    if _reader is not None:
        return True
    try:
        _nltk()
    except DependencyError:
        return False
    return _nltk_route() is not None or not _missing(debian_dir())


def lemma_of(wn, word: str, pos: str = "n") -> str | None:
    """WordNet's base form of ``word`` for ``pos`` (``bats`` -> ``bat``), or None if WordNet lacks it."""
    w = word.lower().strip().replace(" ", "_")
    if not w:
        return None
    return wn.morphy(w, pos)


def synsets_of(wn, word: str, pos: str = "n") -> list[Any]:
    """The synsets of the lemma of ``word`` in ``pos`` in WordNet order (most frequent sense first).

    Only synsets listing that lemma itself (``wn.synsets`` also returns senses of other base forms, such
    as ``glass.n.01`` for ``glasses``); falls back to all of them when none does.
    """
    lemma = lemma_of(wn, word, pos)
    if lemma is None:
        return []
    found = wn.synsets(lemma, pos)
    own = [s for s in found if any(lem.name().lower() == lemma for lem in s.lemmas())]
    return own or found
