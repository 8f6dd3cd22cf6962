"""A local, deterministic, Kimi-compatible HTTP server for tests, benchmarks and offline demos.

>>> import openai
>>> from kimi_magic.simulator import Simulator
>>> with Simulator() as sim:
...     client = openai.OpenAI(base_url=sim.url, api_key="sk-test")
...     reply = client.chat.completions.create(
...         model="kimi-k2.6", messages=[{"role": "user", "content": "Hello"}])
>>> reply.model, reply.choices[0].finish_reason, [r["path"] for r in sim.requests]
('kimi-k2.6', 'stop', ['/v1/chat/completions'])

It speaks Moonshot's API as the client sees it: ``/v1/models``, ``/v1/chat/completions``
(JSON and SSE), ``/v1/tokenizers/estimate-token-count``, ``/v1/files`` and ``/v1/batches``,
with Kimi's error bodies, thinking models, partial mode, JSON mode, tool calls, the builtin
``$web_search`` (refused while thinking, as Kimi does) and the automatic prompt cache. Model
ids and windows come from :mod:`kimi_magic.core.models`. Standard library only.

Replies are built from the request (see :mod:`.replies`): a question is answered by quoting the
earlier sentence that best matches it, a request to summarise gets a sectioned Markdown summary,
tools named in the prompt are called — or exactly the calls its ``sim:call NAME {json}`` lines
script, one per step (see :mod:`.script`). Token counts follow the rules in :mod:`.tokens`
(``ceil(utf8 bytes / 4) + 4`` per message, 256 per image).

Python API::

    sim = Simulator(port=0, api_keys=None, **config).start()   # or ``with Simulator() as sim``
    sim.url                 # http://127.0.0.1:PORT/v1
    sim.requests            # [{"method", "path", "body", "time"}], last 500; never any key
    sim.clear_requests()
    sim.clock.now(); sim.advance(301)      # cache TTLs follow this clock
    sim.fail("rate_limit", times=2, retry_after=1)
    sim.clear_failures()    # drop injected failures not used up yet
    sim.configure(usage="choice")
    sim.stop()

``api_keys``: ``None`` accepts any bearer key; a set accepts only those (others get 401).

Config (constructor keywords, :meth:`Simulator.configure`, ``POST /_sim/configure``):

``usage``            where a stream's last chunk carries usage: "top" (``chunk.usage``) |
                     "choice" (``choices[0].usage``) | "none" (no usage in streams or JSON
                     replies, like some self-hosted servers); JSON replies use the top level
``cached_field``     "top" (``usage.cached_tokens``) | "nested"
                     (``usage.prompt_tokens_details.cached_tokens``) | "none"
``tps``              stream pacing in tokens per second; None streams as fast as possible
``models``           model ids served (default: every id of the model table)
``context_length_in_models``  False leaves ``context_length`` out of ``/v1/models``
``summary_fidelity`` "faithful" | "lossy" (summaries drop or alter numbers and identifiers)
``record``           False keeps request bodies out of ``sim.requests`` (for benchmarks)
``reject_sampling``  sampling knobs get a 400 on the always-thinking models
``batch_lines_per_poll``  batch lines run per poll (None: all remaining at once)
``extra_models``     ids the model table lacks, served as ``{id: {"context_length": N,
                     "supports_reasoning": bool}}`` (a reasoning one always thinks)
``empty_reasoning``  thinking replies carry ``reasoning_content: ""`` (as Kimi may send)
``file_content``     "json" (``{"content": ...}``) | "text" (the extracted text as the body)

Failure kinds for :meth:`Simulator.fail` (each applies to the next ``times`` chat requests):
``auth``, ``permission``, ``quota_403``, ``quota_429``, ``not_found``, ``rate_limit`` and
``overloaded`` (``retry_after=`` adds a Retry-After header), ``server_error``, ``unavailable``,
``token_limit_input``, ``token_limit_total`` (``limit=`` overrides the number),
``content_filter``, ``stream_cut`` (``after=`` deltas, default 3), ``no_finish``,
``malformed_chunk``, ``hang`` (``seconds=``, default 30; ``stop()`` wakes it).

HTTP controls for other processes: ``POST /_sim/advance {"seconds"}``, ``POST /_sim/fail
{"kind", "times", ...}``, ``POST /_sim/configure {...}``, ``GET /_sim/config``,
``GET /_sim/requests``, ``POST /_sim/clear``.

Run it in the foreground with ``python -m kimi_magic.simulator --port 8765``.
"""

from __future__ import annotations

from .clock import SimClock
from .errors import FAILURE_KINDS
from .server import SimConfig, Simulator
from .tokens import count_prompt_tokens

__all__ = ["FAILURE_KINDS", "SimClock", "SimConfig", "Simulator", "count_prompt_tokens"]
