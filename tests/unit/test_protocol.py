import pytest
from pydantic import ValidationError

from serve.errors import ApiError, to_api_error
from serve.protocol import ChatCompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def test_engine_params_carry_sampling_fields_and_extensions() -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MSG, "temperature": 0, "max_tokens": 5, "stop": ["x"],
         "top_k": 3, "stream": True}
    )  # fmt: skip
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
        {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    )  # fmt: skip
    assert req.messages[0].text() == "ab"


def test_error_bodies_are_openai_shaped() -> None:
    err = ApiError(404, "gone", "model_not_found", param="model")
    assert err.body() == {
        "error": {"message": "gone", "type": "invalid_request_error", "code": "model_not_found",
                  "param": "model"}
    }  # fmt: skip

    class LibError(Exception):
        status_code = 409
        code = "dup"
        message = "already there"

    mapped = to_api_error(LibError())
    assert mapped is not None and mapped.status_code == 409 and mapped.code == "dup"
    assert to_api_error(RuntimeError("x")) is None
