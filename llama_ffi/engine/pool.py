"""``EnginePool``: data parallelism, several engines (one per GPU) behind one front door."""

from __future__ import annotations

from typing import Sequence

from .engine import Engine


class EnginePool:
    """Routes each request to the engine with the least work queued and running."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("an EnginePool needs at least one engine")
        self.engines = list(engines)

    def pick(self) -> Engine:
        def load(engine: Engine) -> int:
            s = engine.scheduler
            return len(s.queue) + len(s.running) + len(engine._inbox)
        return min(self.engines, key=load)

    def submit(self, prompt, **kwargs):
        return self.pick().submit(prompt, **kwargs)

    def generate(self, prompt, **kwargs):
        return self.pick().generate(prompt, **kwargs)

    async def complete(self, prompt, **kwargs):
        return await self.pick().complete(prompt, **kwargs)

    def generate_sync(self, prompt, **kwargs):
        return self.pick().generate_sync(prompt, **kwargs)

    def complete_sync(self, prompt, **kwargs):
        return self.pick().complete_sync(prompt, **kwargs)

    def stats(self) -> list[dict]:
        return [engine.stats() for engine in self.engines]

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
