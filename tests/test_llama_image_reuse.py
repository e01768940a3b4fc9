"""Prefix reuse across images: a multi-turn chat about one image encodes it once.

Real SmolLM2, the real libmtmd and the random-weight projector of test_llama_vision. The KV
bookkeeping keys each media cell by the media's id (a hash of its bytes) and the cell's
offset, so the cells of an identical image at the same place are kept, and those of any other
image are not. Each reused answer is compared with the answer of a Llama whose cache is empty.
"""

from __future__ import annotations

import numpy as np
import pytest

from llama_ffi import Llama, ValidationError
from llama_ffi.llama.session import MEDIA_CELL
from llama_ffi.llama.vision import MediaPrompt, media_cell_keys
from llama_ffi.native.mtmd import eval_chunks
from test_llama_vision import (data_uri, first_row, greedy, image_chat, png_bytes,  # noqa: F401 - fixtures
                               projector, script, vlm)


def image(seed: int) -> str:
    return data_uri(png_bytes(32, 32, seed=seed))


def chat(llm, messages, n: int = 10) -> dict:
    return llm.create_chat_completion(messages, max_tokens=n, temperature=0)


def follow_up(messages, answer: str, question: str = "What else is in it?") -> list[dict]:
    return messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": question}]


def media_runs(llm) -> list[tuple[int, int]]:
    """(start, end) of each run of media cells the session's KV bookkeeping holds."""
    cache = np.asarray(llm._session.cache)
    runs, start = [], None
    for i, media in enumerate(np.append(cache < 0, False)):
        if media and start is None:
            start = i
        elif not media and start is not None:
            runs.append((start, i))
            start = None
    return runs


def answer_without_reuse(llm, messages, n: int = 10) -> str:
    llm.reset()
    out = chat(llm, messages, n)
    assert llm.stats.last_reused == 0
    return out["choices"][0]["message"]["content"]


def n_image_tokens(script) -> int:
    return (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2  # LLaVA: one embedding per patch


def test_a_second_turn_about_the_same_image_reuses_its_cells(vlm, model_path, projector, script):
    first = image_chat(image(20))
    out1 = chat(vlm, first)
    p1 = out1["usage"]["prompt_tokens"]
    (image_start, image_end), = media_runs(vlm)
    assert image_end - image_start == n_image_tokens(script)

    second = follow_up(first, out1["choices"][0]["message"]["content"])
    out2 = chat(vlm, second)
    p2 = out2["usage"]["prompt_tokens"]
    stats = vlm.stats
    # the whole first prompt (its image included) is kept; only the new turn's text is decoded
    assert stats.last_reused >= p1 > image_end
    assert stats.last_prefill == p2 - stats.last_reused
    assert stats.last_prefill <= p2 - p1  # the new turn (and the answer, where it tokenizes otherwise)
    assert media_runs(vlm) == [(image_start, image_end)]
    with Llama(str(model_path), mmproj=str(projector), n_ctx=1024, n_threads=2, verbose=False) as fresh:
        expected = chat(fresh, second)
        assert fresh.stats.last_reused == 0 and fresh.stats.last_prefill == p2
    assert out2["choices"][0]["message"]["content"] == expected["choices"][0]["message"]["content"]
    assert out2["usage"] == expected["usage"]


def test_logits_processors_still_see_every_media_cell_as_minus_one(vlm, script):
    messages = image_chat(image(21))
    seen = []

    def keep(ids, logits):
        if not seen:
            seen.append(np.array(ids, copy=True))
        return logits
    vlm.create_chat_completion(messages, max_tokens=1, temperature=0, logits_processor=[keep])
    ids = seen[0]
    assert (ids == MEDIA_CELL).sum() == n_image_tokens(script)
    assert (ids >= MEDIA_CELL).all()


def test_a_different_image_at_the_same_place_reuses_only_the_text_before_it(vlm):
    chat(vlm, image_chat(image(30)))
    (old_start, _), = media_runs(vlm)
    old_keys = vlm._session.cache[old_start]
    messages = image_chat(image(31))
    out = chat(vlm, messages)
    (start, end), = media_runs(vlm)
    assert start == old_start and vlm._session.cache[start] != old_keys
    assert vlm.stats.last_reused == start  # the text before the image, all of it, and no cell after
    assert vlm.stats.last_prefill == out["usage"]["prompt_tokens"] - start
    assert out["choices"][0]["message"]["content"] == answer_without_reuse(vlm, messages)


def test_a_text_change_before_the_same_image_stops_reuse_at_the_change(vlm):
    picture = image(40)
    chat(vlm, image_chat(picture, text="Describe this image."))
    (old_start, _), = media_runs(vlm)
    messages = image_chat(picture, text="Describe this picture, please.")
    out = chat(vlm, messages)
    (start, _), = media_runs(vlm)
    assert start != old_start  # the image moved: the same keys at other positions must not match
    assert vlm.stats.last_reused < min(start, old_start)
    assert vlm.stats.last_prefill == out["usage"]["prompt_tokens"] - vlm.stats.last_reused
    assert out["choices"][0]["message"]["content"] == answer_without_reuse(vlm, messages)

    # the same length of text, one word other: reuse still stops before the image
    chat(vlm, image_chat(picture, text="Describe this image."))
    messages = image_chat(picture, text="Describe this photo.")
    out = chat(vlm, messages)
    (start, _), = media_runs(vlm)
    assert vlm.stats.last_reused < start
    assert out["choices"][0]["message"]["content"] == answer_without_reuse(vlm, messages)


def test_two_images_where_only_the_first_matches_reuse_ends_after_the_first(vlm, script):
    a, b, c = image(50), image(51), image(52)
    chat(vlm, image_chat(a, b))
    before = media_runs(vlm)
    messages = image_chat(a, c)
    out = chat(vlm, messages)
    runs = media_runs(vlm)
    assert len(runs) == 2 and runs[0] == before[0]
    (_, end_a), (start_c, end_c) = runs
    assert end_c - start_c == n_image_tokens(script)
    # a's cells and the text between the images are kept; c is evaluated
    assert end_a <= vlm.stats.last_reused == start_c
    assert vlm.stats.last_prefill == out["usage"]["prompt_tokens"] - start_c
    assert out["choices"][0]["message"]["content"] == answer_without_reuse(vlm, messages)

    # the same two images again: both are kept, and the text after them is evaluated again
    # (the last prompt token is never reused, and never decoded alone after media cells)
    again = chat(vlm, messages)
    assert vlm.stats.last_reused == end_c and vlm.stats.last_prefill == out["usage"]["prompt_tokens"] - end_c
    assert again["choices"][0]["message"]["content"] == out["choices"][0]["message"]["content"]


def test_a_repeated_image_prompt_gives_the_logits_of_a_fresh_evaluation(vlm):
    messages = image_chat(image(55))
    vlm.reset()
    row = first_row(vlm, messages)
    np.testing.assert_allclose(first_row(vlm, messages), row, atol=1e-3)
    assert vlm.stats.last_reused > 0


def test_text_requests_after_an_image_reuse_text_prefixes_as_before(vlm):
    chat(vlm, image_chat(image(60)))
    (image_start, _), = media_runs(vlm)
    question = [{"role": "user", "content": "Name a colour."}]
    out = chat(vlm, question)
    # the chat template's head is shared with the image request's text; no media cell is
    assert 0 < vlm.stats.last_reused <= image_start
    assert media_runs(vlm) == []
    second = follow_up(question, out["choices"][0]["message"]["content"], "And another one?")
    out2 = chat(vlm, second)
    assert vlm.stats.last_reused >= out["usage"]["prompt_tokens"]
    assert vlm.stats.last_prefill == out2["usage"]["prompt_tokens"] - vlm.stats.last_reused
    assert out2["choices"][0]["message"]["content"] == answer_without_reuse(vlm, second)


def test_media_cell_keys_are_negative_int32_and_depend_on_the_media_and_the_offset():
    keys = media_cell_keys("image\0abc\0" + "0", 64)
    assert keys == media_cell_keys("image\0abc\0" + "0", 64)
    assert all(-(2**31) < k < MEDIA_CELL for k in keys)
    assert len(set(keys)) == 64  # the offset matters
    other = media_cell_keys("image\0abd\0" + "0", 64)
    assert not set(keys) & set(other)


def test_eval_chunks_first_chunk_is_checked_and_resumes_a_prompt(vlm):
    mtmd, context = vlm.mtmd, vlm._context
    bitmap = mtmd.bitmap_from_bytes(png_bytes(16, 16, seed=70))
    chunks = mtmd.tokenize(f"Look: {mtmd.marker} and tell.", [bitmap], add_special=False)
    try:
        n = len(chunks)
        for bad in (-1, n, True, "1"):
            with pytest.raises(ValidationError, match="first_chunk"):
                eval_chunks(context, chunks, 0, first_chunk=bad)
        vlm.reset()
        whole = eval_chunks(context, chunks, 0)
        assert whole == chunks.n_pos
        last = chunks[n - 1]
        # resuming at the last (text) chunk decodes only it, after the cells already held
        context.memory_seq_rm(0, whole - last.n_pos, -1)
        assert eval_chunks(context, chunks, whole - last.n_pos, first_chunk=n - 1) == whole

        # where the session resumes: never inside the image, and past the text it holds
        prompt = MediaPrompt([], chunks)
        assert [c.type for c in chunks] == ["text", "image", "text"]
        image_start, image_end = prompt.chunk_starts[1:3]
        assert prompt.resume(0) == (0, 0, 0) and prompt.resume(-3) == (-3, 0, 0)
        assert image_start >= 3
        assert prompt.resume(image_start - 2) == (image_start - 2, image_start, 1)  # rest of the text, then all
        assert prompt.resume(image_start - 1) == (0, 0, 0)  # the chunk again rather than its last token alone
        for inside in (image_start, image_start + 1, image_end - 1):
            assert prompt.resume(inside) == (image_start, image_start, 1)
        end = len(prompt.cells)
        assert end - image_end >= 2
        if end - image_end > 2:
            assert prompt.resume(image_end + 1) == (image_end + 1, end, n)  # nothing left for libmtmd
        assert prompt.resume(end - 1) == (image_end, image_end, n - 1)  # not the last token alone
        assert prompt.cells[:image_start] == list(chunks[0].tokens)
        assert all(key < MEDIA_CELL for key in prompt.cells[image_start:image_end])
    finally:
        chunks.close()
        bitmap.close()
        vlm.reset()
