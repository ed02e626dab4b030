"""Conformance: the official `anthropic` Python SDK against triage's `/v1/messages`.

Requests for an Anthropic-kind model pass through to `triage mock-upstream`'s Messages API
untranslated; requests for an OpenAI-compatible or Gemini model are translated there and back.
Either way the SDK must see Anthropic's types, stream events, tool use and error classes.
"""

from __future__ import annotations

import anthropic
import pytest

from conftest import ROUTER_KEY, UPSTREAM_KEY

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}

# Anthropic-kind (native pass-through), OpenAI-kind and Gemini-kind models of the fixture.
NATIVE = "mock/claude"
TRANSLATED = ["mock/small", "mock/gemini"]
UPSTREAM_NAMES = {"mock/claude": "claude-model", "mock/small": "small-model", "mock/gemini": "gemini-model"}


@pytest.fixture
def claude(triage):
    # No SDK retries: each test sees exactly what the router answered.
    with anthropic.Anthropic(
        base_url=triage.router_url,
        api_key=ROUTER_KEY,
        max_retries=0,
        timeout=30.0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
    ) as client:
        yield client


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("model", [NATIVE, *TRANSLATED])
def test_plain_message(claude: anthropic.Anthropic, model: str) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model, max_tokens=200, system="Be brief.", messages=ask("Hello there")
    )
    assert raw.headers["x-triage-model"] == model
    assert float(raw.headers["x-triage-cost-usd"]) > 0
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"Mock answer from {UPSTREAM_NAMES[model]}: Hello there"
    assert message.usage.input_tokens == 10  # (3 + 2) system + (3 + 2) user
    assert message.usage.output_tokens == 6


def test_native_requests_pass_through_untouched_but_for_the_model(triage, claude) -> None:
    claude.messages.create(
        model=NATIVE,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=ask("pass me through"),
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"},
    )
    last = triage.mock_requests()[-1]
    assert last["path"] == "/v1/messages"
    assert last["body"] == {
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "pass me through"}],
        "model": "claude-model",
        "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "stop_sequences": ["END"],
    }
    assert last["headers"]["x-api-key"] == UPSTREAM_KEY
    assert last["headers"]["anthropic-beta"] == "token-efficient-tools-2025-02-19"


@pytest.mark.parametrize("model", [NATIVE, *TRANSLATED])
def test_stream_matches_the_whole_answer(claude: anthropic.Anthropic, model: str) -> None:
    whole = claude.messages.create(model=model, max_tokens=200, messages=ask("Stream a few words please"))
    with claude.messages.stream(model=model, max_tokens=200, messages=ask("Stream a few words please")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert final.content[0].text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_stream_events_come_in_anthropics_order(claude: anthropic.Anthropic) -> None:
    for model in [NATIVE, "mock/small"]:
        events = list(claude.messages.create(model=model, max_tokens=50, messages=ask("order"), stream=True))
        kinds = [event.type for event in events if event.type != "ping"]
        assert kinds[0] == "message_start"
        assert kinds[1] == "content_block_start"
        assert set(kinds[2:-3]) == {"content_block_delta"}
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("model", [NATIVE, *TRANSLATED])
def test_tool_use_round_trip(claude: anthropic.Anthropic, model: str) -> None:
    messages = ask("What is the weather in Paris?")
    message = claude.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=messages,
    )
    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].input == {"city": "test"}

    messages = messages + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny, 21 C"}]},
    ]
    answer = claude.messages.create(model=model, max_tokens=200, tools=[WEATHER_TOOL], messages=messages)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "Tool result: sunny, 21 C"


@pytest.mark.parametrize("model", [NATIVE, *TRANSLATED])
def test_streamed_tool_use(claude: anthropic.Anthropic, model: str) -> None:
    with claude.messages.stream(
        model=model,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        messages=ask("Weather in Rome?"),
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(block for block in final.content if block.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "test"})


def test_overloaded_anthropic_falls_back_to_an_openai_sibling(triage, claude) -> None:
    triage.mock_script("claude-model", [{"status": 529}, {"status": 529}])
    raw = claude.messages.with_raw_response.create(model=NATIVE, max_tokens=50, messages=ask("fall back"))
    assert raw.headers["x-triage-model"] == "mock/big"
    assert raw.headers["x-triage-fallbacks"] == "mock/claude (529)"
    message = raw.parse()
    assert message.content[0].text == "Mock answer from big-model: fall back"


def test_errors_are_anthropic_error_classes(triage, claude) -> None:
    with anthropic.Anthropic(
        base_url=triage.router_url,
        api_key="sk-wrong",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
    ) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as error:
            wrong.messages.create(model=NATIVE, max_tokens=10, messages=ask("x"))
    assert error.value.body["error"]["type"] == "authentication_error"

    with pytest.raises(anthropic.NotFoundError) as error:
        claude.messages.create(model="nope/nothing", max_tokens=10, messages=ask("x"))
    assert error.value.body["type"] == "error"
    assert error.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model=NATIVE, max_tokens=10, messages=[{"role": "system", "content": "x"}])
    assert error.value.body["error"]["type"] == "invalid_request_error"

    triage.mock_script("claude-model", [{"status": 400, "message": "prompt is too long"}])
    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model=NATIVE, max_tokens=10, messages=ask("x"))
    assert error.value.body["error"]["message"] == "prompt is too long"
