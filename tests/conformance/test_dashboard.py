"""The dashboard (`/ui`) in a real browser: Debian's headless Chromium, driven by Playwright,
against a `triage serve` that has logged real traffic (explicit, `auto`, a failure, a virtual
key) through the mock upstream.

Each page must show the numbers its JSON endpoint (`/v1/dashboard/...`) gives, and those must
match the traffic this test sent; a feedback click must reach the outcome log.

Screenshots of each page go to `$TRIAGE_UI_SCREENSHOTS` (the README's pictures are made with
`TRIAGE_UI_SCREENSHOTS=docs/screenshots`), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import REPO_ROOT, ROUTER_KEY, Triage, _direct, launch

ADMIN_KEY = "sk-dashboard-admin"
VIEWER_KEY = "sk-dashboard-viewer"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPLICIT = [("mock/small", 4), ("mock/big", 2)]
AUTO_PROMPTS = [
    "hi, how are you?",
    "Prove that there are infinitely many primes of the form 4k+3.",
    "Write a Python function that merges two sorted lists, with tests.",
    "Rewrite this sentence to sound friendlier: send me the report now.",
    "What is the weather in Paris right now?",
    "Tell me a short poem about a zebra crossing.",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium not found: install Debian's `chromium` package (scripts/test.sh does) or set CHROMIUM")
    return path


def call(triage: Triage, path: str, key: str = ADMIN_KEY, body: dict | None = None) -> dict:
    """A JSON endpoint of the router, with `key`."""
    request = urllib.request.Request(
        triage.router_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with _direct.open(request, timeout=10) as response:
        return json.loads(response.read())


def usd(n: float) -> str:
    """The page's money format (app.js `fmt.usd`)."""
    digits = 2 if n == 0 else 6 if abs(n) < 0.01 else 4 if abs(n) < 1 else 2
    return ("-$" if n < 0 else "$") + f"{abs(n):.{digits}f}"


def ms(n: float) -> str:
    """The page's duration format (app.js `fmt.ms`)."""
    return f"{n:.2f} ms" if n < 10 else f"{round(n)} ms"


def pct(n: float) -> str:
    return f"{100 * n:.1f}%"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A router with admin and viewer keys and logged traffic; yields it and the traffic's facts."""
    auth = f'admin_keys = ["{ADMIN_KEY}"]\nviewer_keys = ["{VIEWER_KEY}"]\n'
    with launch(tmp_path_factory.mktemp("dashboard"), auth_extra=auth) as triage:
        facts = send_traffic(triage)
        yield triage, facts


def send_traffic(triage: Triage) -> dict:
    sent = 0
    with triage.client() as client:
        for model, times in EXPLICIT:
            for i in range(times):
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"explicit {model} {i}"}]
                )
                sent += 1
        # One streamed answer, so that time to first token has a sample.
        stream = client.chat.completions.create(
            model="mock/small", messages=[{"role": "user", "content": "stream this"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        sent += 1
        auto_ids, auto_models = [], []
        for prompt in AUTO_PROMPTS:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            auto_ids.append(raw.headers["x-triage-request-id"])
            auto_models.append(raw.headers["x-triage-model"])
            sent += 1
        # A model with no fallback whose upstream fails twice (the first try and one retry).
        triage.mock_script("gemini-model", [{"status": 500}, {"status": 500}])
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="mock/gemini", messages=[{"role": "user", "content": "this one fails"}]
            )
        sent += 1
    # A virtual key with a budget, used once.
    created = call(triage, "/admin/keys", body={"name": "team-a", "budget_usd": 5, "budget_period": "month"})
    with triage.client(api_key=created["key"]) as client:
        client.chat.completions.create(model="mock/big", messages=[{"role": "user", "content": "from team a"}])
        sent += 1
    return {"sent": sent, "zebra_id": auto_ids[-1], "key_id": created["id"], "auto_models": auto_models}


def ready(page: Page, name: str) -> None:
    """Waits for a page to finish drawing, failing with its error if it shows one."""
    page.wait_for_function(
        "(name) => document.body.dataset.ready === name || document.body.dataset.error !== undefined",
        arg=name,
    )
    error = page.evaluate("document.body.dataset.error")
    assert error is None, f"the {name} page failed: {error}"


def kpi(page: Page, name: str) -> str:
    return page.locator(f'[data-kpi="{name}"] [data-value]').inner_text()


def column(page: Page, table: str, col: str) -> list[str]:
    return page.locator(f'[data-table="{table}"] td[data-col="{col}"]').all_inner_texts()


def bar_total(page: Page, chart: str) -> float:
    values = page.locator(f'[data-chart="{chart}"] rect').evaluate_all(
        "rects => rects.map(r => Number(r.dataset.value))"
    )
    return sum(values)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TRIAGE_UI_SCREENSHOTS")
    path = (REPO_ROOT / given) if given else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def signed_in(browser, triage: Triage, key: str) -> Page:
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(triage.router_url + "/ui")
    page.fill("#key", key)
    page.click("#sign-in-form button[type=submit]")
    ready(page, "overview")
    return page


def test_sign_in_refuses_a_wrong_key_and_knows_a_viewer(browser, served):
    triage, _ = served
    page = browser.new_page()
    page.goto(triage.router_url + "/ui")
    expect(page.locator("#sign-in")).to_be_visible()
    # A router key may call models but not read the dashboard.
    page.fill("#key", ROUTER_KEY)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("admin or viewer key")
    expect(page.locator("#nav")).to_be_hidden()
    page.close()

    viewer = signed_in(browser, triage, VIEWER_KEY)
    expect(viewer.locator("#role")).to_have_text("viewer")
    # A viewer sees a request but gets no feedback buttons.
    viewer.goto(triage.router_url + "/ui#/requests")
    ready(viewer, "requests")
    viewer.locator('[data-table="requests"] td[data-col="id"] a').first.click()
    ready(viewer, "requests/detail")
    expect(viewer.locator('[data-card="feedback"]')).to_be_visible()
    expect(viewer.locator("[data-feedback]")).to_have_count(0)
    viewer.click("#sign-out")
    expect(viewer.locator("#sign-in")).to_be_visible()
    viewer.close()


def test_overview_shows_the_logged_traffic(browser, served, shots):
    triage, facts = served
    o = call(triage, "/v1/dashboard/overview?since=24h&bucket=hour")
    assert o["requests"] == facts["sent"]
    assert o["errors"] == 1
    page = signed_in(browser, triage, ADMIN_KEY)
    expect(page.locator("#role")).to_have_text("admin")
    assert kpi(page, "requests") == str(facts["sent"])
    assert kpi(page, "errors") == "1"
    assert kpi(page, "spend") == usd(o["cost_usd"])
    assert kpi(page, "saved") == usd(o["savings"]["saved_usd"])
    assert o["latency"]["ttft_p50_ms"] is not None
    assert kpi(page, "ttft").startswith(ms(o["latency"]["ttft_p50_ms"]) + " /")
    # The bars hold every request, errors included, in the hour buckets.
    assert bar_total(page, "requests") == facts["sent"]
    assert page.locator('[data-chart="requests"] rect[data-series="errors"]').count() == 1
    # By model: the API's groups, in its order, with its counts.
    assert column(page, "by-model", "name") == [g["name"] for g in o["by_model"]]
    assert column(page, "by-model", "requests") == [str(g["requests"]) for g in o["by_model"]]
    by_model = {g["name"]: g["requests"] for g in o["by_model"]}
    # Explicit calls, plus whatever `auto` chose (the classifier decides that, not this test).
    chose = facts["auto_models"]
    assert by_model["mock/small"] == 5 + chose.count("mock/small")
    assert by_model["mock/big"] == 3 + chose.count("mock/big")
    assert by_model["mock/gemini"] == 1 + chose.count("mock/gemini")
    # By key: the router key and the virtual key, by its name.
    keys = column(page, "by-key", "name")
    assert f"team-a ({facts['key_id']})" in keys
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.close()


def test_routing_shows_what_auto_chose_and_the_curve(browser, served, shots):
    triage, _ = served
    r = call(triage, "/v1/dashboard/routing?since=7d")
    assert r["requests"] == len(AUTO_PROMPTS)
    assert sum(b["requests"] for b in r["difficulty"]) == len(AUTO_PROMPTS)
    page = signed_in(browser, triage, ADMIN_KEY)
    page.click('nav a[data-page="routing"]')
    ready(page, "routing")
    assert kpi(page, "auto-requests") == str(len(AUTO_PROMPTS))
    assert bar_total(page, "difficulty") == len(AUTO_PROMPTS)
    assert bar_total(page, "skills") == len(AUTO_PROMPTS)
    assert column(page, "by-skill", "skill") == [s["name"] for s in r["by_skill"]]
    # The curve starts at today's `auto` target, and moving the slider moves the readout.
    balanced = next(p for p in r["curve"] if p.get("profile") == "auto")
    readout = page.locator('[data-card="curve"] [data-readout]')
    expect(readout.locator('[data-field="quality-kept"]')).to_have_text(pct(balanced["quality_kept"]))
    expect(readout.locator('[data-field="mean-cost"]')).to_have_text(usd(balanced["mean_cost_usd"]))
    slider = page.locator('[data-card="curve"] input[type=range]')
    slider.fill("0")
    lowest = r["curve"][0]
    expect(readout.locator('[data-field="target"]')).to_contain_text(pct(lowest["target"]))
    expect(readout.locator('[data-field="quality-kept"]')).to_have_text(pct(lowest["quality_kept"]))
    slider.fill(str(r["curve"].index(balanced)))
    page.screenshot(path=str(shots / "routing.png"), full_page=True)
    page.close()


def test_requests_search_detail_and_feedback_reach_the_log(browser, served, shots):
    triage, facts = served
    page = signed_in(browser, triage, ADMIN_KEY)
    page.click('nav a[data-page="requests"]')
    ready(page, "requests")
    expect(page.locator('[data-table="requests"] tbody tr')).to_have_count(facts["sent"])
    page.screenshot(path=str(shots / "requests.png"), full_page=True)
    # Search reads the prompt text.
    page.fill('input[type=search]', "zebra")
    page.press('input[type=search]', "Enter")
    expect(page.locator('[data-table="requests"] tbody tr')).to_have_count(1)
    page.locator('[data-table="requests"] td[data-col="id"] a').click()
    ready(page, "requests/detail")
    detail = call(triage, f"/v1/dashboard/requests/{facts['zebra_id']}")
    assert detail["route"] == "auto" and detail["classifier"] is not None
    expect(page.locator('[data-card="classifier"] [data-field="difficulty"]')).to_have_text(
        f"{detail['classifier']['difficulty']:.3f}"
    )
    expect(page.locator('[data-table="candidates"] tr.chosen td[data-col="model"]')).to_contain_text(
        detail["model"]
    )
    expect(page.locator('[data-card="text"]')).to_contain_text("zebra crossing")
    expect(page.locator('[data-field="answer"]')).to_have_text(detail["answer"])
    # A thumbs-up with a comment, from the page, is stored and shown.
    page.fill('input[aria-label="feedback comment"]', "clear and short")
    page.click('[data-feedback="up"]')
    ready(page, "requests/detail")
    expect(page.locator('[data-table="verdicts"] td[data-col="note"]')).to_have_text(["thumbs up: clear and short"])
    stored = call(triage, f"/v1/dashboard/requests/{facts['zebra_id']}")["feedback"]
    assert [(f["score"], f["thumbs"], f["comment"]) for f in stored] == [(1.0, "up", "clear and short")]
    assert call(triage, "/v1/usage")["labels"]["feedback"] == 1
    page.screenshot(path=str(shots / "request.png"), full_page=True)
    page.close()


def test_models_and_keys_pages(browser, served, shots):
    triage, facts = served
    models = [m for m in call(triage, "/v1/dashboard/models")["data"] if "triage" in m]
    page = signed_in(browser, triage, ADMIN_KEY)
    page.click('nav a[data-page="models"]')
    ready(page, "models")
    assert column(page, "models", "id") == [m["id"] for m in models]
    # The mock's models have their key; the built-in catalog's name the variable they lack.
    expected_keys = [
        "present" if m["triage"]["key_present"] else f"missing {m['triage']['api_key_env']}"
        for m in models
    ]
    assert column(page, "models", "key") == expected_keys
    assert expected_keys[[m["id"] for m in models].index("mock/small")] == "present"
    assert column(page, "models", "input")[column(page, "models", "id").index("mock/small")] == "$0.15"
    page.screenshot(path=str(shots / "models.png"), full_page=True)
    page.click('nav a[data-page="keys"]')
    ready(page, "keys")
    key = call(triage, "/v1/dashboard/keys")["data"][0]
    assert key["id"] == facts["key_id"] and key["spent_usd"] > 0
    assert column(page, "keys", "name") == [f"team-a ({facts['key_id']})"]
    assert column(page, "keys", "spent") == [usd(key["spent_usd"])]
    assert column(page, "keys", "budget") == ["$5.00 / month"]
    page.screenshot(path=str(shots / "keys.png"), full_page=True)
    page.close()


def test_dashboard_endpoints_refuse_router_keys_and_bad_input(served):
    triage, _ = served
    for path in ["/v1/dashboard/overview", "/v1/dashboard/requests", "/v1/dashboard/models"]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(triage, path, key=ROUTER_KEY)
        assert refused.value.code == 401
        assert json.loads(refused.value.read())["error"]["code"] == "invalid_api_key"
    with pytest.raises(urllib.error.HTTPError) as bad:
        call(triage, "/v1/dashboard/overview?bucket=week")
    assert bad.value.code == 400
    assert json.loads(bad.value.read())["error"]["param"] == "bucket"
    # A viewer may read but not give feedback.
    with pytest.raises(urllib.error.HTTPError) as viewer:
        call(triage, "/v1/feedback", key=VIEWER_KEY, body={"id": "req_x", "thumbs": "up"})
    assert viewer.value.code == 401


def test_a_preference_between_two_answers_is_given_and_shown_on_each_side(browser, served, shots):
    """Runs last: its two requests are not part of the traffic the other tests count."""
    triage, _ = served
    ids = {}
    with triage.client() as client:
        for model in ["mock/small", "mock/big"]:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "which answer is better?"}]
            )
            ids[model] = raw.headers["x-triage-request-id"]
    page = signed_in(browser, triage, ADMIN_KEY)
    # The small answer's page offers the big one, the other answer to its prompt.
    page.goto(f"{triage.router_url}/ui#requests/{ids['mock/small']}")
    ready(page, "requests/detail")
    expect(page.locator('[data-table="same-prompt"] td[data-col="model"]')).to_have_text(["mock/big"])
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.fill('input[aria-label="feedback comment"]', "A/B")
    page.click('[data-table="same-prompt"] [data-prefer="loss"]')
    ready(page, "requests/detail")
    stored = call(triage, f"/v1/dashboard/requests/{ids['mock/small']}")["preferences"]
    assert [(p["opponent"], p["result"], p["comment"]) for p in stored] == [(ids["mock/big"], "loss", "A/B")]
    for model, other, result in [("mock/small", "mock/big", "loss"), ("mock/big", "mock/small", "win")]:
        page.goto(f"{triage.router_url}/ui#requests/{ids[model]}")
        ready(page, "requests/detail")
        expect(page.locator('[data-table="verdicts"] td[data-col="who"]')).to_have_text(["preference"])
        expect(page.locator('[data-table="verdicts"] td[data-col="score"]')).to_have_text([result])
        expect(page.locator('[data-table="verdicts"] td[data-col="note"]')).to_have_text(
            [f"against {ids[other]} ({other}): A/B"]
        )
    assert call(triage, "/v1/usage")["labels"]["compared"] == 2
    page.close()
