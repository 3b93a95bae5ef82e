"""The OpenAI chat protocol as the gateway accepts it, plus loraplex's extension block.

Fields follow OpenAI's order, with strict types as OpenAI has them: "stream": "yes" or
"max_tokens": "10" is a 400, not silently coerced. Unknown top-level fields are not dropped
silently: they are logged and passed through to vLLM in `extra_body`, which is how vLLM's own
extensions (top_k, min_p, repetition_penalty...) reach it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from retrieval.query import conversation_query
from serve.routing import RouteRequest

log = logging.getLogger("loraplex.protocol")

Route = Literal["auto", "prompt", "rag", "adapter", "combined"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs 'content'")
        for part in self.content if isinstance(self.content, list) else []:
            kind = part.get("type")
            if kind != "text":
                # The served models read text only; a part of another (or no) type would
                # fail inside the engine client instead of here.
                raise ValueError(
                    f"content part type {kind!r} is not supported: the served models read text "
                    'only; send parts like {"type": "text", "text": "..."} or a string'
                )
            if not isinstance(part.get("text"), str):
                raise ValueError("a content part of type 'text' needs a string 'text'")
        return self

    def text(self) -> str:
        """The message's text, joining the text parts of multi-part content."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class LoraplexOptions(BaseModel):
    """Our extension: `"loraplex": {"route", "adapter", "top_k"}`."""

    model_config = ConfigDict(extra="forbid")

    route: Route = "auto"
    adapter: str | None = None
    top_k: StrictInt = Field(4, ge=1, le=20)


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions` body."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    n: StrictInt | None = Field(None, ge=1, le=16)
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    user: str | None = None

    # -- loraplex extension -------------------------------------------------------------------
    loraplex: LoraplexOptions = Field(default_factory=LoraplexOptions)

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def token_limit(self) -> int | None:
        """The completion token limit asked for (`max_completion_tokens` wins)."""
        return self.max_completion_tokens or self.max_tokens

    def last_user_text(self) -> str:
        """The text of the last user message ('' if there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""

    def route_request(self) -> RouteRequest:
        """What the router decides on: the model, the explicit choices and the query."""
        opts = self.loraplex
        return RouteRequest(
            model=self.model,
            query=self.last_user_text(),
            route=opts.route,
            adapter=opts.adapter,
            top_k=opts.top_k,
            turns=sum(m.role == "user" for m in self.messages),
            search_query=self.search_query(),
        )

    def search_query(self) -> str:
        """What retrieval searches with: the last user turn, with what it refers back to
        ("and how much does it weigh?" brings the earlier turns' subject along)."""
        return conversation_query([m.model_dump(exclude_none=True) for m in self.messages])

    def extra_fields(self) -> dict[str, Any]:
        """Fields OpenAI does not define: logged, then passed through to vLLM."""
        extra = dict(self.model_extra or {})
        if extra:
            log.info("passing non-OpenAI fields through to vLLM: %s", sorted(extra))
        return extra

    def engine_params(self) -> dict[str, Any]:
        """Sampling parameters for the engine call (litellm's OpenAI-style keyword arguments)."""
        params: dict[str, Any] = {}
        for name in (
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "top_logprobs",
            "n",
            "presence_penalty",
            "response_format",
            "seed",
            "stop",
            "temperature",
            "top_p",
            "user",
        ):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.token_limit is not None:
            params["max_tokens"] = self.token_limit
        if self.stream:
            params["stream_options"] = {"include_usage": True}
        extra = self.extra_fields()
        if extra:
            params["extra_body"] = extra
        return params
