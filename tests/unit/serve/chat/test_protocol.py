import pytest
from pydantic import ValidationError

from serve.chat.protocol import ChatCompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def test_engine_params_carry_sampling_fields_and_extensions() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": MSG,
            "temperature": 0,
            "max_tokens": 5,
            "stop": ["x"],
            "top_k": 3,
            "stream": True,
        }
    )
    params = req.engine_params()
    assert params["temperature"] == 0 and params["max_tokens"] == 5 and params["stop"] == ["x"]
    assert params["extra_body"] == {"top_k": 3}  # vLLM extension passed through, not dropped
    assert params["stream_options"] == {"include_usage": True}
    assert req.loraplex.route == "auto"


def test_max_completion_tokens_wins() -> None:
    req = ChatCompletionRequest(model="m", messages=MSG, max_completion_tokens=7, max_tokens=3)
    assert req.token_limit == 7


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 123}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"messages": [{"role": "user", "content": [{"": [5617, -2.78]}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": [{"role": "assistant", "content": [{"x": {}}]}]},
        {"temperature": 3},
        {"temperature": "hot"},
        {"temperature": "0.5"},
        {"stream": "yes"},
        {"max_tokens": "10"},
        {"max_tokens": 10.5},
        {"max_tokens": 0},
        {"n": 0},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"model": ""},
        {"loraplex": {"route": "teleport"}},
        {"loraplex": {"top_k": 99}},
        {"loraplex": {"unknown": 1}},
    ],
)
def test_invalid_requests_are_refused(patch) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **patch})


def test_multipart_text_content() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        }
    )
    assert req.messages[0].text() == "ab"
