"""generate(): greedy decoding against transformers token for token, sampling processors against
transformers' own LogitsProcessor classes, stopping, streaming, interruption and option checks."""
import warnings

import numpy as np
import pytest

import mamba2c
from conftest import randomize_torch_model, tiny_config_kwargs, torch_state_dict_as_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as lp  # noqa: E402

transformers.logging.set_verbosity_error()
VOCAB = tiny_config_kwargs()["vocab_size"]
PAD = 1  # the tiny config's pad token


@pytest.fixture(scope="module")
def pair():
    """The same random tiny model in transformers and in mamba2c."""
    kwargs = tiny_config_kwargs()
    hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs)).eval()
    randomize_torch_model(hf, 7)
    ours = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs))
    ours.load_state_dict(torch_state_dict_as_numpy(hf))
    return hf, ours


def prompts(batch):
    """Token ids (never the pad/eos/bos ids) and a mask; with batch > 1, left padding of lengths
    2, 0 and 5."""
    ids = np.random.default_rng(batch).integers(3, VOCAB, size=(batch, 7))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[0, :2] = 0
        mask[2, :5] = 0
        ids[mask == 0] = PAD
    return ids, mask


def hf_generate(hf, ids, mask=None, **kwargs):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(torch.from_numpy(ids),
                          attention_mask=None if mask is None else torch.from_numpy(mask), **kwargs)
    return out.numpy() if isinstance(out, torch.Tensor) else out


def generate(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(*args, **kwargs)


# ----------------------------------------------------------------------------- greedy vs transformers

@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_matches_transformers(pair, batch, use_cache):
    hf, ours = pair
    ids, mask = prompts(batch)
    want = hf_generate(hf, ids, mask, max_new_tokens=8, use_cache=use_cache, eos_token_id=None)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=8, use_cache=use_cache,
                        eos_token_id=None)
    assert got.dtype == np.int64 and got.shape == (batch, 15)
    np.testing.assert_array_equal(got, want)


def test_default_length_is_twenty_new_tokens_like_transformers(pair):
    hf, ours = pair
    ids, mask = prompts(3)
    want = hf_generate(hf, ids, mask, eos_token_id=None)
    got = generate(ours, ids, attention_mask=mask, eos_token_id=None)
    assert got.shape == (3, 7 + 20)
    np.testing.assert_array_equal(got, want)


def test_mask_inferred_from_pad_tokens_like_transformers(pair):
    hf, ours = pair
    ids, _ = prompts(3)
    want = hf_generate(hf, ids, max_new_tokens=6, eos_token_id=None)
    got = ours.generate(ids, max_new_tokens=6, eos_token_id=None)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_stops_and_pads_like_transformers(pair, use_cache):
    hf, ours = pair
    ids, mask = prompts(3)
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    eos = int(free[0, 7 + 3])  # row 0 reaches it by its 4th new token
    kwargs = dict(max_new_tokens=12, eos_token_id=eos, pad_token_id=0, use_cache=use_cache)
    want = hf_generate(hf, ids, mask, **kwargs)
    got = ours.generate(ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(got, want)
    row = got[0, 7:]
    end = int(np.argmax(row == eos))
    assert end <= 3 and np.all(row[end + 1:] == 0)


def test_eos_list_and_early_stop_for_one_row(pair):
    hf, ours = pair
    ids, _ = prompts(1)
    free = ours.generate(ids, max_new_tokens=12, eos_token_id=None)
    eos = [VOCAB - 1, int(free[0, 7 + 3])]
    want = hf_generate(hf, ids, max_new_tokens=12, eos_token_id=eos)
    got = ours.generate(ids, max_new_tokens=12, eos_token_id=eos)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] <= 7 + 4 and got[0, -1] in eos


def test_greedy_repetition_penalty_matches_transformers(pair):
    hf, ours = pair
    ids, mask = prompts(3)
    kwargs = dict(max_new_tokens=10, repetition_penalty=1.7, eos_token_id=None)
    np.testing.assert_array_equal(ours.generate(ids, attention_mask=mask, **kwargs),
                                  hf_generate(hf, ids, mask, **kwargs))


def test_min_new_tokens_keeps_eos_out(pair):
    hf, ours = pair
    ids, mask = prompts(3)
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None)
    eos = int(free[1, 7])  # row 1 would end at once
    kwargs = dict(max_new_tokens=8, eos_token_id=eos, min_new_tokens=4)
    out = ours.generate(ids, attention_mask=mask, return_dict_in_generate=True,
                        output_scores=True, **kwargs)
    assert not np.any(out.sequences[:, 7:11] == eos)
    for step, scores in enumerate(out.scores):
        assert np.all(np.isneginf(scores[:, eos])) == (step < 4)
    np.testing.assert_array_equal(out.sequences, hf_generate(hf, ids, mask, **kwargs))


# ----------------------------------------------------------------------------- sampling

def test_sampling_is_reproducible_with_a_seed(pair):
    _, ours = pair
    ids, mask = prompts(3)
    kwargs = dict(do_sample=True, max_new_tokens=12, eos_token_id=None)
    first = ours.generate(ids, attention_mask=mask, seed=123, **kwargs)
    again = ours.generate(ids, attention_mask=mask, seed=123, **kwargs)
    from_generator = ours.generate(ids, attention_mask=mask,
                                   generator=np.random.default_rng(123), **kwargs)
    other = ours.generate(ids, attention_mask=mask, seed=124, **kwargs)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, from_generator)
    assert not np.array_equal(first, other)


def test_top_k_one_is_greedy(pair):
    _, ours = pair
    ids, mask = prompts(3)
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    sampled = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None,
                            do_sample=True, top_k=1, temperature=1.5, seed=0)
    np.testing.assert_array_equal(sampled, greedy)


PROCESSOR_CASES = {
    "temperature": dict(temperature=0.6, top_k=0),
    "top_p": dict(top_p=0.8, top_k=0),
    "repetition": dict(repetition_penalty=1.4, top_k=0),
    "default-top-k": dict(),
    "all": dict(repetition_penalty=0.8, temperature=1.3, top_k=20, top_p=0.7),
}


def transformers_processors(options):
    """transformers' processors for these options, in the order its generate builds them."""
    procs = lp.LogitsProcessorList()
    if options.get("repetition_penalty", 1.0) != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(options["repetition_penalty"]))
    if options.get("temperature", 1.0) != 1.0:
        procs.append(lp.TemperatureLogitsWarper(options["temperature"]))
    if options.get("top_k", 50):
        procs.append(lp.TopKLogitsWarper(options.get("top_k", 50)))
    if options.get("top_p", 1.0) < 1.0:
        procs.append(lp.TopPLogitsWarper(options["top_p"]))
    return procs


@pytest.mark.parametrize("case", list(PROCESSOR_CASES))
def test_processed_scores_match_transformers_processors(pair, case):
    _, ours = pair
    options = PROCESSOR_CASES[case]
    ids, mask = prompts(3)
    out = ours.generate(ids, attention_mask=mask, do_sample=True, seed=5, max_new_tokens=6,
                        eos_token_id=None, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, **options)
    procs = transformers_processors(options)
    assert len(out.scores) == len(out.logits) == 6
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        seen = torch.from_numpy(out.sequences[:, :7 + step])
        want = procs(seen, torch.from_numpy(logits.copy())).numpy()
        np.testing.assert_array_equal(np.isneginf(scores), np.isneginf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(scores[finite], want[finite], rtol=1e-6, atol=0)
        chosen = out.sequences[:, 7 + step]
        assert np.all(np.isfinite(scores[np.arange(3), chosen]))  # only kept tokens are drawn
    if case == "default-top-k":  # transformers' default top_k=50 applies when sampling
        assert all(np.isfinite(s).sum(axis=1).max() == 50 for s in out.scores)


def test_num_return_sequences_repeats_rows(pair):
    _, ours = pair
    ids, mask = prompts(3)
    out = ours.generate(ids, attention_mask=mask, do_sample=True, num_return_sequences=2,
                        max_new_tokens=5, eos_token_id=None, seed=1,
                        return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape == (6, 12)
    np.testing.assert_array_equal(out.sequences[:, :7], np.repeat(ids, 2, axis=0))
    assert all(s.shape == (6, VOCAB) for s in out.scores)


def test_output_scores_and_logits_shapes(pair):
    _, ours = pair
    ids, mask = prompts(3)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None,
                        return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert isinstance(out.scores, tuple) and len(out.scores) == 4
    for scores, logits in zip(out.scores, out.logits):
        assert scores.shape == logits.shape == (3, VOCAB)
        assert scores.dtype == logits.dtype == np.float32
    np.testing.assert_array_equal(out.scores[0], out.logits[0])  # greedy: no processor here
    want = ours(input_ids=ids, attention_mask=mask).logits[:, -1]
    np.testing.assert_allclose(out.logits[0], want, rtol=1e-5, atol=1e-6)
    plain = ours.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None,
                          return_dict_in_generate=True)
    assert plain.scores is None and plain.logits is None
    np.testing.assert_array_equal(plain.sequences, out.sequences)
    sequences, *_ = out.to_tuple()
    np.testing.assert_array_equal(sequences, out.sequences)


# ----------------------------------------------------------------------------- configuration

def test_generation_config_sources_and_priority(pair):
    _, ours = pair
    ids, _ = prompts(1)
    base = ours.generate(ids, max_new_tokens=5, eos_token_id=None)
    config = transformers.GenerationConfig(max_new_tokens=5, eos_token_id=None)
    assert ours.generate(ids, generation_config=config).shape == (1, 12)
    np.testing.assert_array_equal(
        ours.generate(ids, generation_config={"max_new_tokens": 5, "eos_token_id": None}), base)
    ours.generation_config = {"max_new_tokens": 3, "eos_token_id": None, "_from_model_config": True,
                              "transformers_version": "5.17.0"}
    try:
        assert ours.generate(ids).shape == (1, 10)
        assert ours.generate(ids, max_new_tokens=5).shape == (1, 12)  # kwargs win
        assert ours.generate(ids, generation_config={"max_new_tokens": 4}).shape == (1, 11)
    finally:
        del ours.generation_config


def test_inputs_as_lists_and_torch_tensors(pair):
    _, ours = pair
    ids, _ = prompts(1)
    want = ours.generate(ids, max_new_tokens=3, eos_token_id=None)
    for given in (ids.tolist(), torch.from_numpy(ids)):
        got = ours.generate(given, max_new_tokens=3, eos_token_id=None)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours.generate(inputs=ids, max_new_tokens=3, eos_token_id=None),
                                  want)


def test_zero_new_tokens_returns_the_prompt(pair):
    _, ours = pair
    ids, _ = prompts(3)
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=0), ids)


def test_progress_bar_runs(pair, capsys):
    _, ours = pair
    ids, _ = prompts(1)
    assert ours.generate(ids, max_new_tokens=3, eos_token_id=None, progress=True).shape == (1, 10)


# ----------------------------------------------------------------------------- streaming

class RecordingTextStreamer(transformers.TextStreamer):
    """transformers' TextStreamer, recording what it is given and what it prints."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.puts, self.texts, self.ended = [], [], False

    def put(self, value):
        self.puts.append(np.array(value))
        super().put(value)

    def on_finalized_text(self, text, stream_end=False):
        self.texts.append(text)
        self.ended = self.ended or stream_end


class NumberTokenizer:
    """Decodes ids as space-separated numbers: all TextStreamer needs from a tokenizer."""

    def decode(self, ids, **kwargs):
        return "".join(f" {i}" for i in ids)


class Recorder:
    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, value):
        self.puts.append(np.array(value))

    def end(self):
        self.ended += 1


def test_text_streamer_gets_every_token(pair):
    _, ours = pair
    ids, _ = prompts(1)
    streamer = RecordingTextStreamer(NumberTokenizer(), skip_prompt=True)
    out = ours.generate(ids, max_new_tokens=6, eos_token_id=None, streamer=streamer)
    np.testing.assert_array_equal(streamer.puts[0], ids)
    assert [p.shape for p in streamer.puts[1:]] == [(1,)] * 6
    np.testing.assert_array_equal(np.concatenate(streamer.puts[1:]), out[0, 7:])
    assert streamer.ended and "".join(streamer.texts) == NumberTokenizer().decode(out[0, 7:])


def test_text_iterator_streamer_yields_the_text(pair):
    _, ours = pair
    ids, _ = prompts(1)
    streamer = transformers.TextIteratorStreamer(NumberTokenizer(), skip_prompt=True)
    out = ours.generate(ids, max_new_tokens=5, eos_token_id=None, streamer=streamer)
    assert "".join(streamer) == NumberTokenizer().decode(out[0, 7:])


def test_put_end_streamer_and_callback_record_every_column(pair):
    _, ours = pair
    ids, mask = prompts(3)
    recorder, columns = Recorder(), []
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None,
                        streamer=recorder)
    np.testing.assert_array_equal(recorder.puts[0], ids)
    np.testing.assert_array_equal(np.stack(recorder.puts[1:], axis=1), out[:, 7:])
    assert recorder.ended == 1
    again = ours.generate(ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None,
                          streamer=columns.append)
    np.testing.assert_array_equal(np.stack(columns, axis=1), again[:, 7:])
    np.testing.assert_array_equal(again, out)


def test_keyboard_interrupt_stops_and_leaves_the_model_usable(pair):
    _, ours = pair
    ids, mask = prompts(3)
    want = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None)
    steps = []

    class Interrupting(Recorder):
        def put(self, value):
            super().put(value)
            if len(self.puts) == 4:  # the prompt, then three tokens
                raise KeyboardInterrupt

    streamer = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None,
                      streamer=streamer)
    assert len(streamer.puts) == 4 and streamer.ended == 1

    def callback(tokens):
        steps.append(tokens)
        if len(steps) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None,
                      streamer=callback, use_cache=False)
    assert len(steps) == 2
    np.testing.assert_array_equal(
        ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None), want)


# ----------------------------------------------------------------------------- bad input

BAD = [
    (dict(num_beams=2), NotImplementedError, "num_beams"),
    (dict(assistant_model=object()), NotImplementedError, "assistant_model"),
    (dict(no_repeat_ngram_size=3), NotImplementedError, "no_repeat_ngram_size"),
    (dict(logits_processor=[object()]), NotImplementedError, "logits_processor"),
    (dict(frobnicate=1), ValueError, "frobnicate"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2.5), TypeError, "max_new_tokens"),
    (dict(max_length=5), ValueError, "max_length"),
    (dict(do_sample=True, temperature=0.0), ValueError, "temperature"),
    (dict(do_sample=True, top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_k=-1), ValueError, "top_k"),
    (dict(repetition_penalty=0.0), ValueError, "repetition_penalty"),
    (dict(num_return_sequences=2), ValueError, "num_return_sequences"),
    (dict(num_return_sequences=0, do_sample=True), ValueError, "num_return_sequences"),
    (dict(eos_token_id=VOCAB), ValueError, "eos_token_id"),
    (dict(eos_token_id=2, pad_token_id=-1), ValueError, "pad_token_id"),
    (dict(do_sample="yes"), TypeError, "do_sample"),
    (dict(do_sample=True, seed=1, generator=np.random.default_rng(1)), ValueError, "seed"),
    (dict(do_sample=True, seed="x"), TypeError, "seed"),
    (dict(streamer=42), TypeError, "streamer"),
    (dict(generation_config=42), TypeError, "generation_config"),
    (dict(generation_config={"num_beams": 4}), NotImplementedError, "num_beams"),
    (dict(attention_mask=np.ones((1, 3))), ValueError, "attention_mask"),
    (dict(attention_mask=np.full((1, 7), 2)), ValueError, "attention_mask"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_options_raise_clear_errors(pair, kwargs, error, match):
    _, ours = pair
    ids, _ = prompts(1)
    with pytest.raises(error, match=match):
        ours.generate(ids, **kwargs)


@pytest.mark.parametrize("ids, error, match", [
    ([[1, 2, VOCAB]], ValueError, "outside"),
    ([[-1, 2]], ValueError, "outside"),
    ([1, 2, 3], ValueError, "shape"),
    ([[[1, 2]]], ValueError, "shape"),
    ([[1.0, 2.0]], TypeError, "integers"),
    (np.zeros((1, 0), np.int64), ValueError, "empty"),
])
def test_bad_input_ids_raise_clear_errors(pair, ids, error, match):
    _, ours = pair
    with pytest.raises(error, match=match):
        ours.generate(ids, max_new_tokens=2)


def test_help_explains_every_option():
    doc = mamba2c.Mamba2ForCausalLM.generate.__doc__
    for name in ("max_new_tokens", "min_new_tokens", "max_length", "do_sample", "temperature",
                 "top_k", "top_p", "repetition_penalty", "eos_token_id", "pad_token_id",
                 "num_return_sequences", "use_cache", "return_dict_in_generate",
                 "output_scores", "output_logits", "streamer", "seed", "progress",
                 "generation_config", "attention_mask"):
        assert name in doc, name
