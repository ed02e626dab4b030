"""Conformance: the official `openai` Python SDK against Anthropic-kind and Gemini-kind models.

triage translates the OpenAI request to each provider's own API (served by
`triage mock-upstream`) and the answers back; the SDK must not be able to tell, streaming and
tool calls included, and the answers must be priced at the catalog's prices.
"""

from __future__ import annotations

import json

import openai
import pytest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# Model id → (upstream name, input price, output price) from conftest.py.
MODELS = {
    "mock/claude": ("claude-model", 3.0, 15.0),
    "mock/gemini": ("gemini-model", 0.5, 3.0),
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("model", MODELS)
def test_plain_completion_is_translated_and_priced(client: openai.OpenAI, model: str) -> None:
    upstream, input_price, output_price = MODELS[model]
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, *user("Hello there")]
    )
    assert raw.headers["x-triage-model"] == model
    resp = raw.parse()
    assert resp.choices[0].message.content == f"Mock answer from {upstream}: Hello there"
    assert resp.choices[0].finish_reason == "stop"
    usage = resp.model_dump()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (10, 6)
    expected = (10 * input_price + 6 * output_price) / 1e6
    assert usage["cost"] == pytest.approx(expected, abs=1e-12)
    assert float(raw.headers["x-triage-cost-usd"]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_stream_matches_non_stream(client: openai.OpenAI, model: str) -> None:
    full = client.chat.completions.create(model=model, messages=user("Stream me a few words"))
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=user("Stream me a few words"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


@pytest.mark.parametrize("model", MODELS)
def test_tool_calls_round_trip(client: openai.OpenAI, model: str) -> None:
    messages = user("Weather in Paris?")
    resp = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}

    messages = messages + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    follow_up = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert follow_up.choices[0].message.content == "Tool result: sunny"


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=user("Weather in Rome?"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    arguments, name, finish = "", None, None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            name = delta.function.name or name
            arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "test"}
    assert finish == "tool_calls"


def test_gemini_safety_block_is_a_content_filter_finish(triage, client: openai.OpenAI) -> None:
    triage.mock_script("gemini-model", [{"finish_reason": "SAFETY"}])
    resp = client.chat.completions.create(model="mock/gemini", messages=user("blocked"))
    assert resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].message.content is None


def test_anthropic_overload_falls_back_to_an_openai_sibling(triage, client: openai.OpenAI) -> None:
    triage.mock_script("claude-model", [{"status": 529}, {"status": 529}])
    raw = client.chat.completions.with_raw_response.create(model="mock/claude", messages=user("fall back"))
    assert raw.headers["x-triage-model"] == "mock/big"
    assert raw.headers["x-triage-fallbacks"] == "mock/claude (529)"
    assert raw.parse().choices[0].message.content == "Mock answer from big-model: fall back"
