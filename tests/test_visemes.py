"""Phonemisation and viseme mapping on words whose pronunciation is known."""
from __future__ import annotations

import pytest

from spectre.errors import AssetError, ConfigError, InputError
from spectre.evaluate import visemes as V


@pytest.fixture(scope="module")
def table(shared_assets):
    return V.load_viseme_map(shared_assets / "spectre_data" / "phonemes2visemes.csv")


@pytest.fixture(scope="module")
def cmu():
    return V.CmudictG2P()


def test_table_maps_lip_shapes(table):
    # bilabials share one viseme, labiodentals another, rounded vowels are 'u'/'o'
    assert table["p"] == table["b"] == table["m"] == "p"
    assert table["f"] == table["v"] == "f"
    assert table["uː"] == "u" and table["oʊ"] == "o"
    assert table["ʔ"] == ""  # glottal stop has no viseme


def test_known_words_to_visemes(table, cmu):
    assert V.text_to_visemes("bomb", cmu, table) == "pap"          # b ɑː m
    assert V.text_to_visemes("five", cmu, table) == "faf"          # f aɪ v
    assert V.text_to_visemes("shoe", cmu, table) == "Su"           # ʃ uː
    assert V.text_to_visemes("the", cmu, table) == "T@"            # ð ə
    # punctuation and case do not matter, one token per word
    assert V.text_to_visemes("Bomb, five... SHOE!", cmu, table) == "pap faf Su"
    assert V.text_to_visemes("  ", cmu, table) == ""


def test_bilabial_minimal_pairs_collapse(table, cmu):
    # "pat", "bat" and "mat" look the same on the lips
    vis = {w: V.text_to_visemes(w, cmu, table) for w in ("pat", "bat", "mat", "fat")}
    assert vis["pat"] == vis["bat"] == vis["mat"] != vis["fat"]


def test_arpabet_conversion_follows_espeak_conventions():
    assert V.arpabet_to_ipa(["K", "AA1", "R"]) == ["k", "ɑːɹ"]                 # r-coloured vowel
    assert V.arpabet_to_ipa(["K", "AE1", "R", "IY0"]) == ["k", "æ", "ɹ", "i"]  # r before a vowel
    assert V.arpabet_to_ipa(["L", "IH1", "T", "AH0", "L"]) == ["l", "ɪ", "t", "əl"]
    assert V.arpabet_to_ipa(["B", "ER1", "D"]) == ["b", "ɜː", "d"]
    assert V.arpabet_to_ipa(["AH0", "B", "AW1", "T"]) == ["ɐ", "b", "aʊ", "t"]
    with pytest.raises(InputError, match="ARPAbet"):
        V.arpabet_to_ipa(["XX"])


def test_every_arpabet_symbol_maps_into_the_table(table):
    missing = {a: ipa for a, ipa in V.ARPABET_TO_IPA.items() if ipa not in table}
    assert not missing
    assert all(ipa in table for ipa in (*V._R_COLOURED.values(), *V._UNSTRESSED.values(), "əl", "ɐ", "i"))


def test_out_of_vocabulary_words_use_letter_rules(table, cmu):
    assert V.letters_to_sounds("knight") == ["n", "aɪ", "t"]
    assert V.letters_to_sounds("shmoppe") == ["ʃ", "m", "ɑː", "p"]
    assert V.text_to_visemes("zzqxblorf", cmu, table) != ""
    assert "ZZQXBLORF" in cmu.oov


def test_normalize_transcript():
    assert V.normalize_transcript("it's  a <eos> Test, ok?") == "IT'S A TEST OK"


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="unknown G2P"):
        V.make_g2p("festival")
    bad = tmp_path / "p2v.csv"
    bad.write_text("p,p\n")
    with pytest.raises(AssetError, match="5 columns"):
        V.load_viseme_map(bad)
    with pytest.raises(AssetError, match="cannot read"):
        V.load_viseme_map(tmp_path / "missing.csv")
    with pytest.raises(AssetError, match="phonemes2visemes"):
        V.find_viseme_map(tmp_path)  # empty asset folder


def test_espeak_backend_agrees_with_cmudict_when_present(table, cmu):
    if not V.espeak_available():
        pytest.skip("phonemizer + espeak-ng not installed")
    import jiwer

    esp = V.make_g2p("espeak")
    assert V.make_g2p("auto").name == "espeak"
    assert V.text_to_visemes("bomb", esp, table) == "pap"
    text = ("there are more than seven billion people on this planet "
            "and most of them have never seen the ocean")
    ref, hyp = V.text_to_visemes(text, esp, table), V.text_to_visemes(text, cmu, table)
    assert jiwer.cer(ref, hyp) < 0.1
