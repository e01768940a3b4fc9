"""``GET /metrics``: Prometheus text exposition from each engine's ``stats()``.

Per model (label ``model``): queue depth, running sequences, tokens counters, generated
tokens per second since the previous scrape, KV-cache use, prefix-cache hit rate and
time to first token (p50/p99 over the last 4096 requests). Plus HTTP requests by route
and status, counted by a small middleware.
"""

from __future__ import annotations

import collections

# (name, type, help, stats key)
_GAUGES = [
    ("llama_ffi_queue_depth", "gauge", "Requests waiting for a sequence slot", "queued"),
    ("llama_ffi_running_sequences", "gauge", "Requests being generated", "running"),
    ("llama_ffi_prompt_tokens_total", "counter", "Prompt tokens submitted", "prompt_tokens"),
    ("llama_ffi_cached_prompt_tokens_total", "counter", "Prompt tokens served from the prefix cache",
     "cached_prompt_tokens"),
    ("llama_ffi_generated_tokens_total", "counter", "Tokens generated", "generated_tokens"),
    ("llama_ffi_requests_finished_total", "counter", "Engine requests finished", "finished"),
    ("llama_ffi_preemptions_total", "counter", "Requests preempted because the KV cache filled", "preemptions"),
    ("llama_ffi_engine_steps_total", "counter", "Batches decoded", "steps"),
    ("llama_ffi_kv_cells_used", "gauge", "KV-cache cells holding tokens", "kv_cells_used"),
    ("llama_ffi_kv_cells_total", "gauge", "KV-cache cells", "kv_cells_total"),
    ("llama_ffi_prefix_cache_hit_rate", "gauge", "Share of prompt tokens found in the prefix cache",
     "prefix_cache_hit_rate"),
    # speculative decoding (llama-server: llamacpp:spec_decode_num_*_total)
    ("llama_ffi_spec_decode_num_drafts_total", "counter", "Speculative decoding verification steps",
     "draft_steps"),
    ("llama_ffi_spec_decode_num_draft_tokens_total", "counter", "Draft tokens checked by the model",
     "draft_tokens"),
    ("llama_ffi_spec_decode_num_accepted_tokens_total", "counter", "Draft tokens the model accepted",
     "draft_accepted"),
]


class HttpCounter:
    """ASGI middleware counting responses by route path (others as "other") and status."""

    def __init__(self, app, paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.paths = paths
        self.counts: collections.Counter = collections.Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                # the matched route's template ("/slots/{id_slot}"), so a path parameter
                # does not make a label per value; unknown paths are "other"
                path = getattr(scope.get("route"), "path", scope["path"])
                path = path if path in self.paths else "other"
                self.counts[(path, message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(registry, http: HttpCounter | None) -> str:
    lines: list[str] = []
    stats = {name: (entry, entry.engine.stats()) for name, entry in registry.entries.items()}
    for metric, kind, text, key in _GAUGES:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{model="{_escape(n)}"}} {float(s.get(key) or 0):g}' for n, (_, s) in stats.items()]
    lines += ["# HELP llama_ffi_kv_cache_usage_ratio KV-cache cells used / total",
              "# TYPE llama_ffi_kv_cache_usage_ratio gauge"]
    lines += [f'llama_ffi_kv_cache_usage_ratio{{model="{_escape(n)}"}} '
              f'{s["kv_cells_used"] / max(1, s["kv_cells_total"]):g}' for n, (_, s) in stats.items()]
    lines += ["# HELP llama_ffi_tokens_per_second Generated tokens per second since the previous scrape",
              "# TYPE llama_ffi_tokens_per_second gauge"]
    lines += [f'llama_ffi_tokens_per_second{{model="{_escape(n)}"}} {e.tokens_per_second(s["generated_tokens"]):g}'
              for n, (e, s) in stats.items()]
    lines += ["# HELP llama_ffi_time_to_first_token_seconds Time to first token (recent requests)",
              "# TYPE llama_ffi_time_to_first_token_seconds summary"]
    for n, (_, s) in stats.items():
        for q, key in (("0.5", "ttft_p50"), ("0.99", "ttft_p99")):
            if s[key] is not None:
                lines.append(f'llama_ffi_time_to_first_token_seconds{{model="{_escape(n)}",quantile="{q}"}} {s[key]:g}')
    if http is not None:
        lines += ["# HELP llama_ffi_http_requests_total HTTP responses by path and status",
                  "# TYPE llama_ffi_http_requests_total counter"]
        lines += [f'llama_ffi_http_requests_total{{path="{_escape(p)}",status="{c}"}} {v}'
                  for (p, c), v in sorted(http.counts.items())]
    return "\n".join(lines) + "\n"
