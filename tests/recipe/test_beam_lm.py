"""Beam search with a word LM: a forbidden word changes the result, zero weights equal plain beam search,
the lexicon holds, word boundaries follow the tokenizer; decode.py tune=true picks the best dev point and
never reads test."""
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recipes.data.tokenizer import CharTokenizer, build_sentencepiece_tokenizer
from recipes.decoding.arpa import ArpaLM
from recipes.decoding.beam import BeamSearchDecoder
from recipes.decoding.beam_lm import BeamLMDecoder
from recipes.decoding.kneser_ney import KneserNeyEstimate
from recipes.decoding.word_lm import TokenSpelling, WordLMScorer
from recipes.models.objectives import CTCObjective

# ids: 0 blank, 1 A, 2 B, 3 C, 4 ▁
CHARS = CharTokenizer(["A", "B", "C", "▁"])
A, B, C, SP = 1, 2, 3, 4


def _lm(words: dict[str, float]) -> ArpaLM:
    """A unigram LM with the given log10 probabilities (and </s>, <unk>)."""
    unigrams = {(w,): (p, 0.0) for w, p in words.items()}
    unigrams.update({("</s>",): (-0.5, 0.0), ("<unk>",): (-3.0, 0.0), ("<s>",): (-99.0, 0.0)})
    return ArpaLM({1: unigrams})


class _Emissions(torch.nn.Module):
    """A CTC head whose encoder output already is the logits."""

    def forward(self, enc):
        return enc.log_softmax(-1)


def _ctc_model():
    return SimpleNamespace(objective=CTCObjective(0), ctc_head=_Emissions(), predictor=None, joiner=None,
                           choose_head=None)


def _frames(*rows):
    """(1, T, V) logits from per-frame probabilities {token: p} (the rest spread over the others)."""
    out = torch.full((len(rows), CHARS.vocab_size), 1e-3)
    for t, row in enumerate(rows):
        for token, p in row.items():
            out[t, token] = p
    return out.log()[None]


def test_ctc_forbidden_word_changes_the_hypothesis():
    """Acoustically "AB" (0.6 * 0.6) beats "BA" (0.35 * 0.35); an LM giving AB log10 p = -99 makes it BA."""
    enc = _frames({A: 0.6, B: 0.35}, {0: 0.9}, {B: 0.6, A: 0.35})
    lengths = torch.tensor([3])
    lm = _lm({"AB": -99.0, "BA": -1.0})
    model = _ctc_model()
    for lexicon in (True, False):
        base = BeamLMDecoder(beam_size=4, lm_weight=0.0, lexicon=lexicon).prepare(lm, CHARS, ["AB", "BA"])
        fused = base.with_weights(1.0, 0.0)
        assert CHARS.decode(base(model, enc, lengths)[0]) == "AB"
        assert CHARS.decode(fused(model, enc, lengths)[0]) == "BA"
        assert BeamSearchDecoder(beam_size=4)(model, enc, lengths) == base(model, enc, lengths)


def _random_ctc(seed, frames=12):
    torch.manual_seed(seed)
    return (torch.randn(1, frames, CHARS.vocab_size) * 2.5).double()


def _kn_lm(texts, tmp_path, order=3) -> ArpaLM:
    return ArpaLM.load(KneserNeyEstimate([t.split() for t in texts], order=order).write_arpa(tmp_path / "lm.arpa"))


WORDS = ["A", "AB", "BC", "CAB", "C"]
TEXTS = [" ".join(random.Random(k).choice(WORDS) for _ in range(3)) for k in range(40)]


def test_zero_weights_equal_plain_ctc_beam_search(tmp_path):
    lm = _kn_lm(TEXTS, tmp_path)
    model = _ctc_model()
    for seed in range(15):
        enc = _random_ctc(seed)
        lengths = torch.tensor([enc.shape[1]])
        for rescore in (True, False):
            plain = BeamSearchDecoder(beam_size=5, rescore=rescore)
            fused = BeamLMDecoder(beam_size=5, lm_weight=0.0, word_score=0.0, lexicon=False, rescore=rescore)
            fused.prepare(lm, CHARS)
            assert fused(model, enc, lengths) == plain(model, enc, lengths), seed
            assert fused.nbest(model, enc, lengths, scorer=fused.scorer) == plain.nbest(model, enc, lengths), seed


def test_lexicon_mode_never_emits_an_out_of_lexicon_word(tmp_path):
    lm = _kn_lm(TEXTS, tmp_path)
    model = _ctc_model()
    open_words, lexicon_words = set(), set()
    for seed in range(25):
        enc = _random_ctc(seed, frames=16)
        lengths = torch.tensor([16])
        for rescore in (True, False):
            with_lexicon = BeamLMDecoder(beam_size=4, lm_weight=0.3, lexicon=True, rescore=rescore)
            without = BeamLMDecoder(beam_size=4, lm_weight=0.3, lexicon=False, rescore=rescore)
            lexicon_words.update(CHARS.decode(with_lexicon.prepare(lm, CHARS, WORDS)(model, enc, lengths)[0]).split())
            open_words.update(CHARS.decode(without.prepare(lm, CHARS)(model, enc, lengths)[0]).split())
    assert lexicon_words <= set(WORDS) and len(lexicon_words) >= 3
    assert open_words - set(WORDS)  # the emissions do produce other words: the lexicon is what keeps them out


def test_word_boundaries_follow_the_tokenizer(tmp_path):
    """The words the scorer completes are tokenizer.decode(tokens).split(), for characters and sentencepiece
    (<unk> aside, which sentencepiece renders as a separate " ⁇ ")."""
    texts = ["THE CAT SAT ON THE MAT", "A DOG AND A CAT", "THE END OF THE STORY"] * 5
    pieces = build_sentencepiece_tokenizer(texts, tmp_path, vocab_size=40)
    rng = random.Random(0)
    for tokenizer in (CHARS, pieces):
        spelling = TokenSpelling.from_tokenizer(tokenizer)
        for _ in range(300):
            ids = [i for i in range(1, tokenizer.vocab_size) if i != getattr(tokenizer, "unk_id", None)]
            tokens = [rng.choice(ids) for _ in range(rng.randint(0, 12))]
            assert spelling.words(tokens) == tokenizer.decode(tokens).split(), tokens
    lm = _kn_lm(texts, tmp_path)
    scorer = WordLMScorer(lm, TokenSpelling.from_tokenizer(pieces), lm_weight=0.7, word_score=1.5)
    for text in ["THE CAT", "A DOG AND THE MAT", "CAT"]:
        words = text.split()
        expected = 0.7 * lm.sentence_score(words) * 2.302585092994046 + 1.5 * len(words)
        assert scorer.score(pieces.encode(text)) == pytest.approx(expected, rel=1e-12)
    lexicon = WordLMScorer(lm, TokenSpelling.from_tokenizer(pieces), lexicon=["THE", "CAT"], tokenizer=pieces)
    assert lexicon.in_lexicon(pieces.encode("THE CAT THE")) and not lexicon.in_lexicon(pieces.encode("THE DOG"))
    assert lexicon.score(pieces.encode("CAT THE")) > float("-inf") == lexicon.score(pieces.encode("CAT SAT"))


# -- decode.py decoding=beam_lm tune=true on a freshly trained tiny CTC run ---------------------------------
@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory, tiny_corpus):
    from tests.recipe.conftest import TINY_CORPUS
    from tests.recipe.recipe_cfg import compose_train
    from train import train

    out = tmp_path_factory.mktemp("beam_lm_ctc")
    data = [f"data.root={tiny_corpus}", *[f"data.corpus.{k}={v}" for k, v in TINY_CORPUS.items()],
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]
    cfg = compose_train(["loss=ctc", "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
                         "trainer.limit_val_batches=1", "test=false"], out, data=data)
    train(cfg)
    return out / "logs", Path(cfg.paths.output_dir), Path(tiny_corpus)


def _decode(log_dir, overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from decode import decode
    from tests.recipe.recipe_cfg import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("decode.yaml", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        cfg.log_to_wandb = False
    return decode(cfg)


GRID = ["tune_lm_weights=[0.0,0.5,2.0]", "tune_word_scores=[0.0,3.0]"]


def test_lookahead_leaves_complete_scores_and_bounds_open_words(tmp_path):
    """With the look-ahead, a complete hypothesis scores exactly as without it; an open word already carries
    lm_weight * ln of the best unigram among the lexicon words it can still become ("A": A or AB; "C": C or
    CAB), each token adds the change of that bound, and completing a word swaps the bound for its exact score."""
    lm = _kn_lm(TEXTS, tmp_path)
    spelling = TokenSpelling.from_tokenizer(CHARS)
    kwargs = {"lm_weight": 0.8, "word_score": 0.4, "lexicon": WORDS, "tokenizer": CHARS}
    ahead = WordLMScorer(lm, spelling, lookahead=True, **kwargs)
    plain = WordLMScorer(lm, spelling, lookahead=False, **kwargs)
    rng = random.Random(1)
    for _ in range(200):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        tokens = CHARS.encode(text)
        assert ahead.score(tokens) == pytest.approx(plain.score(tokens), rel=1e-12, abs=1e-12), text
    ln10, unigram = 2.302585092994046, {w: lm.score((), w) for w in WORDS}
    state, partial = ahead.initial, []
    for token in CHARS.encode("AB C"):
        state, delta = ahead.extend(state, token)
        partial.append(delta)
    # after "A": bound max(A, AB); after "AB": AB (exact: "AB" completes later with its context score)
    assert partial[0] == pytest.approx(0.8 * ln10 * max(unigram["A"], unigram["AB"]))
    assert partial[1] == pytest.approx(0.8 * ln10 * (unigram["AB"] - max(unigram["A"], unigram["AB"])))
    # "▁" completes AB: its exact score replaces the bound; "C" opens a word that can be C or CAB
    assert partial[2] == pytest.approx(0.8 * ln10 * (lm.score(("<s>",), "AB") - unigram["AB"]) + 0.4)
    assert partial[3] == pytest.approx(0.8 * ln10 * max(unigram["C"], unigram["CAB"]))
    # without the look-ahead nothing is charged before a word completes
    assert [plain.extend(plain.initial, CHARS.encode("A")[0])[1]] == [0.0]
    assert ahead.with_weights(0.0, 0.0).extend(ahead.initial, CHARS.encode("A")[0])[1] == 0.0


def test_beam_lm_decodes_and_builds_the_lm_once(ctc_run):
    log_dir, run_dir, corpus = ctc_run
    summary = _decode(log_dir, ["decoding=beam_lm", "decoding.beam_size=3", "split=dev"])
    assert summary["utterances"] == 12 and summary["suffix"].startswith("beamlm_size3_3gram_lmw0.5_ws0.0_lexicon")
    lm_files = list((corpus / "lm").glob("*/3gram.arpa"))
    assert len(lm_files) == 1 and lm_files[0].parent.name.startswith("train-")
    stamp = lm_files[0].stat().st_mtime_ns
    _decode(log_dir, ["decoding=beam_lm", "decoding.beam_size=3", "split=dev", "max_utterances=2"])
    assert lm_files[0].stat().st_mtime_ns == stamp


def test_tune_picks_the_best_dev_point_and_never_reads_test(ctc_run):
    log_dir, run_dir, corpus = ctc_run
    manifests = sorted((corpus / "manifests").glob("test*.jsonl"))
    assert manifests
    saved = {p: p.read_bytes() for p in manifests}
    try:
        for p in manifests:  # test is unreadable (same size, for the corpus' size check): any read of it fails
            p.write_bytes(b"{" * len(saved[p]))
        summary = _decode(log_dir, ["decoding=beam_lm", "decoding.beam_size=3", "tune=true", "split=dev", *GRID])
        grid_file = Path(summary["settings"]["tuned"]["grid_file"])
        grid_file.unlink()
        with pytest.raises(ValueError):  # split=test: tuning on dev completes, then reading test fails
            _decode(log_dir, ["decoding=beam_lm", "decoding.beam_size=3", "tune=true", "split=test", *GRID])
        assert grid_file.is_file()
    finally:
        for p, content in saved.items():
            p.write_bytes(content)
    tuned = summary["settings"]["tuned"]
    grid = json.loads(Path(tuned["grid_file"]).with_suffix(".json").read_text())["grid"]
    assert len(grid) == 6 and Path(tuned["grid_file"]).read_text().count("\n") == 7
    best = min(grid, key=lambda row: row["wer"])
    assert tuned["dev_wer"] == best["wer"] and tuned["tuning_split"] == "dev"
    # every grid point's WER is what decoding dev with it gives
    for row in grid:
        point = _decode(log_dir, ["decoding=beam_lm", "decoding.beam_size=3", "split=dev",
                                  f"decoding.lm_weight={row['lm_weight']}", f"decoding.word_score={row['word_score']}"])
        assert point["wer"] == pytest.approx(row["wer"]), row
    chosen = (tuned["lm_weight"], tuned["word_score"])
    assert chosen == (best["lm_weight"], best["word_score"])
    assert (summary["settings"]["decoding"]["lm_weight"], summary["settings"]["decoding"]["word_score"]) == chosen
    assert summary["wer"] == pytest.approx(best["wer"])  # dev decoded with the chosen point
    assert len({row["wer"] for row in grid}) > 1  # the grid is not flat: the choice means something


def test_tune_refuses_test_as_the_tuning_set(ctc_run):
    log_dir, _, _ = ctc_run
    with pytest.raises(ValueError, match="tune_split='test'.*dev split only"):
        _decode(log_dir, ["decoding=beam_lm", "tune=true", "tune_split=test"])
    with pytest.raises(ValueError, match="needs decoding=beam_lm"):
        _decode(log_dir, ["decoding=beam", "tune=true"])


# -- transducers and SSNT: word-LM fusion in their beam searches ------------------------------------------
# ids: 0 blank, 1 A, 2 B, 3 C, 4 D, 5 ▁ (the V = 6 of tests/recipe/test_beam.py's tiny models)
CHARS6 = CharTokenizer(["A", "B", "C", "D", "▁"])
WORDS6 = ["A", "AB", "BC", "CAD", "D", "DD"]
TEXTS6 = [" ".join(random.Random(k).choice(WORDS6) for _ in range(3)) for k in range(40)]


def _transducer(loss, seed, end_token=False):
    from tests.recipe.test_beam import _model

    model = _model(loss, seed=seed)
    if loss == "ssnt":
        model.objective.end_token = end_token
    return model


LOSSES = [("rnnt", False), ("modified_rnnt", False), ("ssnt", False), ("ssnt", True)]


@pytest.mark.parametrize(("loss", "end_token"), LOSSES)
def test_zero_weights_equal_plain_beam_search_for_transducers(tmp_path, loss, end_token):
    lm = _kn_lm(TEXTS6, tmp_path)
    for seed in range(6):
        model = _transducer(loss, seed, end_token)
        torch.manual_seed(100 + seed)
        enc, lengths = torch.randn(2, 9, 8) * 2, torch.tensor([9, 7])
        for rescore in (True, False):
            plain = BeamSearchDecoder(beam_size=3, rescore=rescore)
            fused = BeamLMDecoder(beam_size=3, lm_weight=0.0, word_score=0.0, lexicon=False, rescore=rescore)
            fused.prepare(lm, CHARS6)
            with torch.no_grad():
                assert fused(model, enc, lengths) == plain(model, enc, lengths), (seed, rescore)
                assert fused.nbest(model, enc, lengths, scorer=fused.scorer) == plain.nbest(model, enc, lengths)


@pytest.mark.parametrize(("loss", "end_token"), LOSSES)
def test_transducer_forbidden_word_changes_the_hypothesis(tmp_path, loss, end_token):
    """The LM gives the first word of the lm_weight = 0 hypothesis log10 p = -99 (every other word -1):
    with lm_weight = 1 that word disappears from the result, and the search (not only the rescoring)
    avoids it."""
    changed = 0
    for seed in range(8):
        model = _transducer(loss, seed, end_token)
        torch.manual_seed(200 + seed)
        enc, lengths = torch.randn(1, 10, 8) * 3, torch.tensor([10])
        base = BeamLMDecoder(beam_size=4, lm_weight=0.0, lexicon=False).prepare(_lm({}), CHARS6)
        with torch.no_grad():
            words = CHARS6.decode(base(model, enc, lengths)[0]).split()
        if not words:
            continue
        others = {w: -1.0 for w in WORDS6 + words}
        forbidden = _lm({**others, words[0]: -99.0})
        for rescore in (True, False):
            fused = BeamLMDecoder(beam_size=4, lm_weight=1.0, lexicon=False, rescore=rescore).prepare(forbidden, CHARS6)
            with torch.no_grad():
                hyp = CHARS6.decode(fused(model, enc, lengths)[0]).split()
                nbest = fused.nbest(model, enc, lengths, scorer=fused.scorer)[0]
                searched = [CHARS6.decode(t).split() for t, _ in nbest]
            assert words[0] not in hyp, (seed, words, hyp)
            assert words[0] not in searched[0]
        changed += 1
    assert changed >= 3


@pytest.mark.parametrize(("loss", "end_token"), LOSSES)
def test_transducer_lexicon_mode_never_emits_an_out_of_lexicon_word(tmp_path, loss, end_token):
    lm = _kn_lm(TEXTS6, tmp_path)
    lexicon_words, open_words = set(), set()
    for seed in range(6):
        model = _transducer(loss, seed, end_token)
        torch.manual_seed(300 + seed)
        enc, lengths = torch.randn(3, 10, 8) * 3, torch.tensor([10, 8, 9])
        with torch.no_grad():
            for rescore in (True, False):
                for lexicon, found in ((True, lexicon_words), (False, open_words)):
                    decoder = BeamLMDecoder(4, lm_weight=0.2, word_score=3.0, lexicon=lexicon, rescore=rescore)
                    for hyp in decoder.prepare(lm, CHARS6, WORDS6)(model, enc, lengths):
                        found.update(CHARS6.decode(hyp).split())
    assert lexicon_words <= set(WORDS6) and lexicon_words
    assert open_words - set(WORDS6)
