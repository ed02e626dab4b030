"""Conformance: the official `openai` Python SDK against a real triage router.

The router runs from the built binary in front of `triage mock-upstream` (see conftest.py), so
every answer, token count and failure is known in advance. These tests check that what the SDK
sees is what an OpenAI client expects (types, streaming, tool calls, error classes) plus
triage's own additions: `usage.cost`, the `x-triage-*` headers and `pricing` in `/v1/models`.
"""

from __future__ import annotations

import json

import openai
import pytest

from conftest import BIG_PRICES, SMALL_PRICES, UPSTREAM_KEY

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def expected_cost(usage: dict, prices: dict) -> float:
    """Catalog price arithmetic: cached input at the cached price, the rest at full price."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    cached = min(cached, usage["prompt_tokens"])
    cached_price = prices.get("cached_input", prices["input"])
    return (
        (usage["prompt_tokens"] - cached) * prices["input"]
        + cached * cached_price
        + usage["completion_tokens"] * prices["output"]
    ) / 1e6


def assert_priced(usage: dict, prices: dict) -> None:
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "cost" in usage, f"usage has no cost: {usage}"
    assert usage["cost"] == pytest.approx(expected_cost(usage, prices), rel=1e-9, abs=1e-15)


# --- plain completions -------------------------------------------------------------------


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="mock/small", messages=user("Hello there router"))
    assert resp.object == "chat.completion"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Mock answer from small-model: Hello there router"
    assert choice.message.tool_calls is None

    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # `cost` is not an OpenAI field: pydantic keeps it as an extra.
    assert "cost" in (resp.usage.model_extra or {})
    assert_priced(resp.model_dump()["usage"], SMALL_PRICES)


def test_raw_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock/small", messages=user("headers please")
    )
    assert raw.status_code == 200
    assert raw.headers["x-triage-model"] == "mock/small"
    assert raw.headers["x-triage-request-id"]
    assert "x-triage-fallbacks" not in raw.headers, "nothing failed, so nothing to report"
    resp = raw.parse()
    assert resp.choices[0].message.content == "Mock answer from small-model: headers please"
    usage = resp.model_dump()["usage"]
    assert_priced(usage, SMALL_PRICES)
    header_cost = float(raw.headers["x-triage-cost-usd"])
    assert header_cost == pytest.approx(usage["cost"], abs=1e-9)
    assert "e" not in raw.headers["x-triage-cost-usd"].lower(), "a plain decimal, no exponent"


def test_request_ids_differ(client: openai.OpenAI) -> None:
    ids = {
        client.chat.completions.with_raw_response.create(
            model="mock/small", messages=user("id")
        ).headers["x-triage-request-id"]
        for _ in range(2)
    }
    assert len(ids) == 2


def test_other_model_is_priced_at_its_own_prices(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock/big", messages=user("big one")
    )
    assert raw.headers["x-triage-model"] == "mock/big"
    resp = raw.parse()
    assert resp.choices[0].message.content == "Mock answer from big-model: big one"
    assert_priced(resp.model_dump()["usage"], BIG_PRICES)


def test_upstream_key_is_the_providers_not_the_callers(triage, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="mock/small", messages=user("whose key"))
    last = triage.mock_requests()[-1]
    assert last["body"]["model"] == "small-model"
    assert last["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


# --- streaming ---------------------------------------------------------------------------


def test_stream_matches_non_stream_and_reports_cost(client: openai.OpenAI) -> None:
    prompt = user("Stream me a few words please")
    full = client.chat.completions.create(model="mock/small", messages=prompt)
    expected = full.choices[0].message.content

    chunks = list(
        client.chat.completions.create(
            model="mock/small",
            messages=prompt,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices
    )
    assert text == expected
    finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finish == ["stop"]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    usage = last.model_dump()["usage"]
    assert_priced(usage, SMALL_PRICES)
    # Same prompt and answer, so the same tokens and cost as the non-streamed answer.
    assert usage["cost"] == pytest.approx(full.model_dump()["usage"]["cost"], rel=1e-9)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="mock/small", messages=user("no usage for me"), stream=True
        )
    )
    assert chunks
    assert [c for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks), "no usage-only chunk"
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text == "Mock answer from small-model: no usage for me"


def test_stream_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="mock/small", messages=user("stream headers"), stream=True
    ) as raw:
        assert raw.status_code == 200
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-triage-model"] == "mock/small"
        assert raw.headers["x-triage-request-id"]
        # The cost is only known at the end of a stream: it is in the usage chunk, not a header.
        assert "x-triage-cost-usd" not in raw.headers
        chunks = list(raw.parse())
    assert "".join(ch.delta.content or "" for c in chunks for ch in c.choices) == (
        "Mock answer from small-model: stream headers"
    )


# --- tools -------------------------------------------------------------------------------


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict] = user("What's the weather in Paris?")
    first = client.chat.completions.create(
        model="mock/small", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}
    assert_priced(first.model_dump()["usage"], SMALL_PRICES)

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    second = client.chat.completions.create(
        model="mock/small", messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "Tool result: Sunny, 21 C"


def test_streamed_tool_call_raw_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="mock/small",
            messages=user("weather?"),
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    deltas = [tc for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert deltas, "no tool-call deltas"
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert len([d for d in deltas if d.function and d.function.arguments]) > 1, (
        "arguments should arrive in several fragments"
    )
    assert json.loads(arguments) == {"city": "test"}
    finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finish == ["tool_calls"]


def test_streamed_tool_call_sdk_reassembles(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="mock/small",
        messages=user("weather in Oslo?"),
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        done_events = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert len(done_events) == 1
    assert done_events[0].name == "get_weather"
    assert json.loads(done_events[0].arguments) == {"city": "test"}
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert_priced(final.model_dump()["usage"], SMALL_PRICES)


# --- errors and fallbacks ----------------------------------------------------------------


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope/nothing", messages=user("hi"))
    err = info.value
    assert err.status_code == 404
    assert "/v1/models" in err.message
    assert "nope/nothing" in err.message
    assert err.code == "model_not_found"
    assert err.param == "model"


def test_wrong_key_is_authentication_error(triage) -> None:
    with triage.client(api_key="sk-wrong") as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="mock/small", messages=user("hi"))
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_every_model_failing_is_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="mock/small", messages=user("doomed"), extra_body={"mock": {"status": 503}}
        )
    err = info.value
    # The last failure (mock/big's 503) decides the status.
    assert isinstance(err, openai.InternalServerError)
    assert err.status_code == 503
    assert err.type == "upstream_error"
    assert "mock/small" in err.message and "mock/big" in err.message
    assert "mock/small" in err.response.headers.get("x-triage-fallbacks", "")
    assert err.response.headers.get("x-triage-request-id")


def test_bad_gateway_when_upstream_500s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="mock/big", messages=user("doomed"), extra_body={"mock": {"status": 500}}
        )
    assert info.value.status_code == 502


def test_fallback_to_next_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock/small",
        messages=user("fall back please"),
        extra_body={"mock": {"model": "small-model", "status": 503}},
    )
    assert raw.status_code == 200
    assert raw.headers["x-triage-model"] == "mock/big"
    assert "mock/small" in raw.headers["x-triage-fallbacks"]
    resp = raw.parse()
    assert resp.choices[0].message.content == "Mock answer from big-model: fall back please"
    # The answering model's prices apply.
    usage = resp.model_dump()["usage"]
    assert_priced(usage, BIG_PRICES)
    assert float(raw.headers["x-triage-cost-usd"]) == pytest.approx(usage["cost"], abs=1e-9)


def test_streamed_fallback(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="mock/small",
        messages=user("stream fall back"),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"model": "small-model", "status": 503}},
    ) as raw:
        assert raw.headers["x-triage-model"] == "mock/big"
        assert "mock/small" in raw.headers["x-triage-fallbacks"]
        chunks = list(raw.parse())
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text == "Mock answer from big-model: stream fall back"
    assert_priced(chunks[-1].model_dump()["usage"], BIG_PRICES)


def test_retry_on_same_model(triage, client: openai.OpenAI) -> None:
    # One scripted 503 for small-model: the router retries it and small-model answers.
    triage.mock_script("small-model", [{"status": 503}])
    raw = client.chat.completions.with_raw_response.create(
        model="mock/small", messages=user("retry me")
    )
    assert raw.headers["x-triage-model"] == "mock/small"
    assert raw.parse().choices[0].message.content == "Mock answer from small-model: retry me"


def test_bad_request_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mock/small", messages="not a list")  # type: ignore[arg-type]
    assert info.value.status_code == 400


# --- models ------------------------------------------------------------------------------


def test_models_list_has_pricing(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert "mock/small" in models and "mock/big" in models
    small = models["mock/small"]
    assert small.object == "model"
    assert small.owned_by == "mock"
    extra = small.model_extra or {}
    assert extra["pricing"] == {
        "prompt": "0.00000015",
        "completion": "0.0000006",
        "input_cache_read": "0.000000075",
    }
    assert extra["context_length"] == 128000
    assert extra["capabilities"]["tools"] is True
    assert models["mock/big"].model_extra["pricing"] == {
        "prompt": "0.0000025",
        "completion": "0.00001",
    }
