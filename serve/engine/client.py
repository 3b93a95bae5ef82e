"""The gateway's client to vLLM: litellm's Router over the replicas (litellm alone for one).

Replicas, retries, cooldowns and fallbacks come from litellm rather than from our own code. One
wildcard deployment per replica (`hosted_vllm/*`) lets any served name (the base model or an
adapter's served name) reach every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx

from serve.errors import ServiceError, engine_unavailable

PROVIDER = "hosted_vllm"


class AdapterNotLoaded(Exception):
    """vLLM answered that it does not hold the requested adapter."""


def _import_litellm() -> Any:
    # Without this litellm spends ~7 s at import trying to fetch a remote cost map.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class EngineClient:
    """Chat completions against the vLLM replicas, with errors mapped to API errors."""

    def __init__(
        self, urls: list[str], *, timeout_s: float, num_retries: int, api_key: str | None = None
    ) -> None:
        """`api_key`: what the replicas require on /v1 (vLLM's --api-key), if anything."""
        self.urls = urls
        self.litellm = _import_litellm()
        deployments = [
            {
                "model": f"{PROVIDER}/*",
                "api_base": f"{url}/v1",
                "api_key": api_key or "unused",
                "timeout": timeout_s,
                # Self-hosted: zero prices spare litellm a cost-map search per call.
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
            }
            for url in urls
        ]
        self.router = self.litellm.Router(
            model_list=[{"model_name": f"{PROVIDER}/*", "litellm_params": d} for d in deployments],
            num_retries=num_retries,
            timeout=timeout_s,
            # A replica that fails is skipped briefly; with all down we answer 503 at once.
            allowed_fails=1,
            cooldown_time=2,
        )
        # With one replica there is nothing to balance or fail over to, and the Router's
        # deployment lookup and bookkeeping cost ~4 ms a call (bench/gateway_overhead.py):
        # call litellm directly, with the same retries and timeout.
        direct = [{k: v for k, v in d.items() if k != "model"} for d in deployments]
        self._single: dict[str, Any] | None = None
        if len(urls) == 1:
            self._single = {**direct[0], "num_retries": num_retries}
        self._replicas = direct
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))

    async def close(self) -> None:
        await self.http.aclose()

    async def ready(self) -> dict[str, bool]:
        """Which replicas answer `/health` right now."""

        async def probe(url: str) -> bool:
            try:
                return (await self.http.get(f"{url}/health", timeout=2.0)).status_code == 200
            except httpx.HTTPError:
                return False

        results = await asyncio.gather(*(probe(u) for u in self.urls))
        return dict(zip(self.urls, results, strict=True))

    async def chat(
        self, served_model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> dict[str, Any]:
        """A non-streaming completion as a plain OpenAI-shaped dict."""
        try:
            resp = await self._acompletion(served_model, messages, params)
        except Exception as exc:  # noqa: BLE001 - every engine failure is mapped below
            raise self._map_error(exc) from exc
        return _clean(resp.model_dump())

    async def chat_stream(
        self, served_model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming completion. The first chunk is awaited here, so failures surface as
        errors before any byte is sent to the client, never as a broken stream."""
        try:
            stream = await self._acompletion(served_model, messages, {**params, "stream": True})
            iterator = stream.__aiter__()
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return _empty()
        except Exception as exc:  # noqa: BLE001
            raise self._map_error(exc) from exc
        return _chunks(first, iterator)

    async def _acompletion(
        self, served_model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Any:
        model = f"{PROVIDER}/{served_model}"
        if self._single is not None:
            return await self.litellm.acompletion(
                model=model, messages=messages, **self._single, **params
            )
        lt = self.litellm
        unreachable = (lt.APIConnectionError, lt.InternalServerError, lt.ServiceUnavailableError)
        try:
            return await self.router.acompletion(model=model, messages=messages, **params)
        except unreachable as exc:
            # A replica that is down refuses the connection (litellm reports it as a 500 or a
            # connection error), and the Router's retry may pick the same replica again: try
            # each replica once, directly; a refused connection costs a millisecond.
            failure: Exception = exc
        for replica in random.sample(self._replicas, len(self._replicas)):
            try:
                return await lt.acompletion(model=model, messages=messages, **replica, **params)
            except unreachable as exc:
                failure = exc
        raise failure

    def _map_error(self, exc: Exception) -> Exception:
        lt = self.litellm
        message = _message(exc)
        if isinstance(exc, lt.NotFoundError) or (
            isinstance(exc, lt.BadRequestError) and "does not exist" in message
        ):
            return AdapterNotLoaded(message)
        if isinstance(exc, lt.ContextWindowExceededError):
            return ServiceError(message, "context_length_exceeded", param="messages")
        if isinstance(exc, lt.BadRequestError | lt.UnprocessableEntityError):
            return ServiceError(message, "invalid_request")
        if isinstance(exc, lt.Timeout):
            return ServiceError(
                "The model server did not answer in time.", "engine_timeout", "timeout"
            )
        return engine_unavailable(type(exc).__name__)


def _message(exc: Exception) -> str:
    """The engine's own words: litellm wraps vLLM's JSON error body in prose of its own."""
    text = str(getattr(exc, "message", None) or exc)
    start = text.find('{"error"')
    if start >= 0:
        try:
            body, _ = json.JSONDecoder().raw_decode(text[start:])
            return str(body["error"]["message"])[:1000]
        except (ValueError, KeyError, TypeError):
            pass
    return text.split("\n")[0].strip()[:1000]


_TOP = ("id", "object", "created", "model", "choices", "usage", "system_fingerprint")
_CHOICE = ("index", "message", "delta", "logprobs", "finish_reason")
_MESSAGE = ("role", "content", "refusal", "tool_calls", "function_call")


def _pick(obj: dict[str, Any], keys: tuple[str, ...], keep_none: tuple[str, ...]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if k in obj and (obj[k] is not None or k in keep_none)}


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    """Reduce litellm's response object to the OpenAI shape (no provider bookkeeping)."""
    out = _pick(payload, _TOP, ())
    choices = []
    for choice in payload.get("choices") or []:
        c = _pick(choice, _CHOICE, ("finish_reason", "logprobs"))
        for key in ("message", "delta"):
            if isinstance(c.get(key), dict):
                c[key] = _pick(c[key], _MESSAGE, ("content",) if key == "message" else ())
        choices.append(c)
    out["choices"] = choices
    usage = out.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        if payload.get("object") == "chat.completion.chunk" and all(
            not c.get("delta") and c.get("finish_reason") is None for c in choices
        ):
            out["choices"] = []  # OpenAI's final usage chunk carries no choices
    return out


async def _chunks(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield _clean(first.model_dump())
        async for chunk in rest:
            yield _clean(chunk.model_dump())
    finally:
        # When the caller stops early (its client went away), close the response to vLLM now:
        # vLLM then aborts the request instead of generating to max_tokens for nobody, and the
        # connection is not left for the garbage collector.
        close = getattr(rest, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


async def _empty() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover
