"""Async front-ends: results equal the sync ones, streams, concurrency, cancellation."""

from __future__ import annotations

import asyncio

PROMPT = "The moon is"
GREEDY = {"temperature": 0.0}


def test_completion_async_equals_sync(llama):
    sync = llama(PROMPT, max_tokens=6, **GREEDY)["choices"][0]["text"]
    out = asyncio.run(llama.create_completion_async(PROMPT, max_tokens=6, **GREEDY))
    assert out["choices"][0]["text"] == sync


def test_async_stream(llama):
    async def collect():
        stream = await llama.create_completion_async(PROMPT, max_tokens=6, stream=True, **GREEDY)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())
    assert "".join(c["choices"][0]["text"] for c in chunks) == llama.generate_text(PROMPT, max_tokens=6, **GREEDY)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_concurrent_tasks_serialise(llama):
    reference = llama.generate_text(PROMPT, max_tokens=5, **GREEDY)

    async def many():
        calls = [llama.create_completion_async(PROMPT, max_tokens=5, **GREEDY) for _ in range(3)]
        chat = llama.create_chat_completion_async([{"role": "user", "content": "hi"}], max_tokens=3)
        return await asyncio.gather(*calls, chat)

    *outs, chat = asyncio.run(many())
    assert [o["choices"][0]["text"] for o in outs] == [reference] * 3
    assert chat["object"] == "chat.completion"


def test_cancelling_a_task_stops_generation(llama):
    async def cancel_soon():
        task = asyncio.create_task(llama.create_completion_async(PROMPT, max_tokens=400, **GREEDY))
        await asyncio.sleep(0.3)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancel_soon())
    # the worker stops within a token and releases the Llama
    assert llama.generate_text(PROMPT, max_tokens=3, **GREEDY) == llama.generate_text(PROMPT, max_tokens=3, **GREEDY)
    assert llama.stats.generated_tokens > 0


def test_leaving_an_async_stream_early(llama):
    async def partial():
        stream = await llama.create_chat_completion_async([{"role": "user", "content": "Tell a story."}],
                                                          max_tokens=300, stream=True, **GREEDY)
        got = []
        async for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                break
        await stream.aclose()
        return got

    assert len(asyncio.run(partial())) == 3
    assert llama.generate_text(PROMPT, max_tokens=2, **GREEDY)


def test_embedding_async(embedder):
    out = asyncio.run(embedder.create_embedding_async(["a", "b"]))
    assert len(out["data"]) == 2
