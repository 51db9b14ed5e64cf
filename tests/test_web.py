"""The web page at / in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against a real ``lcs serve`` on 127.0.0.1. Screenshots go to $LCS_ARTIFACTS (default runs/test-artifacts/web).

Without Chromium the tests skip, unless LCS_REQUIRE_BROWSER=1 (CI sets it), which makes that a failure."""

import base64
import importlib.util
import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(
    os.environ.get("LCS_ARTIFACTS", Path(__file__).resolve().parent.parent / "runs" / "test-artifacts" / "web")
)


def have_browser() -> bool:
    return importlib.util.find_spec("selenium") is not None and Path(CHROMIUM).exists() and Path(DRIVER).exists()


if not have_browser():
    if os.environ.get("LCS_REQUIRE_BROWSER") == "1":
        raise RuntimeError("LCS_REQUIRE_BROWSER=1 but chromium, chromium-driver or selenium is missing")
    pytest.skip("needs chromium + chromium-driver (apt) and selenium (pip)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

GARMENT = ["footwear", "upper_body", "bag"]  # a binary label set of several attributes (no two on together)


@pytest.fixture(scope="module")
def web_bundle(service_bundle, tmp_path_factory) -> Path:
    """The service bundle plus a briefly trained binary label set, ``garment``, for the same-seed row to flip."""
    from models.artifacts import load_manifest, write_json
    from tests.conftest import SEED, THREADS
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    out = tmp_path_factory.mktemp("web-bundle") / "bundle"
    shutil.copytree(service_bundle, out)
    man = load_manifest(out, "latents")
    man["label_sets"]["garment"] = {"name": "garment", "attrs": GARMENT, "kind": "binary"}
    write_json(out / "latents.json", man)
    train_labelset(
        TrainLabelSetConfig(
            bundle=str(out),
            label_set="garment",
            steps=30,
            width=32,
            depth=2,
            label_embed=8,
            batch_size=64,
            diag_every=30,
            seed=SEED,
            threads=THREADS,
        )
    )
    return out


@pytest.fixture(scope="module")
def server(web_bundle, tmp_path_factory):
    from tests.conftest import Server

    s = Server(web_bundle, tmp_path_factory.mktemp("web-data"), "web-token")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,1600",
        "--disable-dev-shm-usage",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, predicate, timeout=60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def grid(driver, what: str = "src") -> list[str]:
    """The grid's image sources (or alts), read in one script call: the page replaces the images as answers arrive."""
    return driver.execute_script(f"return [...document.querySelectorAll('#grid img')].map(i => i.{what})")


def same_seed_row(driver) -> list[tuple[str, set[str], np.ndarray]]:
    """The same-seed row as a person sees it: per image its caption, the attributes its alt text says are on, and
    its pixels (read in one script call: the page replaces the row when all of its answers are in)."""
    figures = driver.execute_script(
        "return [...document.querySelectorAll('#compare figure')]"
        ".map(f => [f.querySelector('figcaption').textContent, (f.querySelector('img') || {}).alt,"
        " (f.querySelector('img') || {}).src])"
    )
    out = []
    for caption, alt, src in figures:
        assert alt and alt.startswith("same seed: "), (caption, alt)  # an image, not an error
        on = alt.removeprefix("same seed: ")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
        out.append((caption, set() if on == "no attribute on" else set(on.split(", ")), pixels))
    return out


def first_caption(driver) -> str | None:
    return driver.execute_script("return (document.querySelector('#compare figcaption') || {}).textContent")


def assert_one_flip_each(row, flipped: list[set[str]]) -> None:
    """The row is the base and then, per image, the base's labels with exactly the attribute(s) in ``flipped``
    changed; no two images are the same picture."""
    (_, base, _), *flips = row
    assert len(flips) == len(flipped)
    for (caption, on, _), changed in zip(flips, flipped, strict=True):
        assert on ^ base == changed, (caption, base, on)
    pictures = [pixels.tobytes() for _, _, pixels in row]
    assert len(set(pictures)) == len(row), "images in the same-seed row repeat"


def test_page_loads_and_toggling_an_attribute_fetches_a_new_image(server, browser):
    browser.get(server.url + "/")
    wait(browser, lambda d: d.title == "Latent constraints")  # read empty once on a loaded CI machine: wait for it
    wait(browser, lambda d: "fashion-mnist" in d.find_element(By.ID, "status").text)
    wait(browser, lambda d: len(grid(d)) == 8)  # the default count
    before = grid(browser)
    assert all(src.startswith("data:image/png;base64,") for src in before)
    # every control has an accessible name
    assert browser.find_element(By.CSS_SELECTOR, "label[for='s-sandal-on']").text == "on"
    assert browser.find_element(By.CSS_SELECTOR, "#attrs [role=radiogroup][aria-label='sandal']")
    shot(browser, "1-loaded")

    browser.find_element(By.ID, "s-sandal-on").click()
    wait(browser, lambda d: grid(d) != before and len(grid(d)) == 8)
    alts = grid(browser, "alt")
    assert all(alt == "sandal" for alt in alts), alts  # categorical: the requested class and nothing else
    # the comparison row: the same seed as the base (a sandal) and as each of the 9 other classes
    wait(browser, lambda d: first_caption(d) == "base: sandal")  # the page shows the row once all of it is in
    row = same_seed_row(browser)
    assert row[0][:2] == ("base: sandal", {"sandal"})
    others = [caption for caption, _, _ in row[1:]]
    assert "sandal" not in others and len(set(others)) == 9
    assert_one_flip_each(row, [{"sandal", c} for c in others])  # each image shows its class alone
    assert not browser.find_element(By.ID, "sample-error").is_displayed()
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe  # no script error, no CSP violation, no failed request
    shot(browser, "2-sandal")


def test_same_seed_row_flips_one_attribute_of_the_base_image(server, browser):
    browser.get(server.url + "/")
    wait(browser, lambda d: len(grid(d)) == 8)
    Select(browser.find_element(By.ID, "labelset")).select_by_value("garment")
    browser.find_element(By.ID, "s-footwear-on").click()
    wait(browser, lambda d: d.find_element(By.ID, "grid").get_attribute("data-spec") == "footwear")
    wait(browser, lambda d: first_caption(d) == "base: footwear")
    row = same_seed_row(browser)
    assert [caption for caption, _, _ in row] == ["base: footwear", "− footwear", "+ upper_body", "+ bag"]
    # the base row with one attribute flipped: footwear off, or a second one on (never seen together: drawn anyway)
    assert_one_flip_each(row, [{a} for a in GARMENT])
    assert not browser.find_element(By.ID, "sample-error").is_displayed()
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    shot(browser, "2c-same-seed-row")


def query_error(driver) -> tuple[str, str, str]:
    """The query box's error message, the marked query with its caret line, and the marked character."""
    return driver.execute_script(
        "const $ = (id) => document.getElementById(id);"
        "return [$('query-error').textContent, $('query-where').textContent,"
        " ($('query-where').querySelector('mark') || {}).textContent]"
    )


def test_query_box_draws_with_q_and_marks_the_error_position(server, browser):
    browser.get(server.url + "/")
    wait(browser, lambda d: len(grid(d)) == 8)
    Select(browser.find_element(By.ID, "count")).select_by_visible_text("4")  # small n keeps the draws quick
    wait(browser, lambda d: len(grid(d)) == 4)
    toggles = grid(browser)
    box = browser.find_element(By.ID, "query")
    assert box.get_attribute("placeholder") == "smiling and (eyeglasses or wearing_hat) and not bald"
    box.send_keys("Sandal OR (category.bag)", Keys.ENTER)  # Enter draws
    canonical = "category.sandal or category.bag"
    wait(browser, lambda d: d.find_element(By.ID, "query-result").is_displayed())
    assert browser.find_element(By.ID, "query-text").text == canonical  # what the server understood
    assert browser.find_element(By.ID, "query-converged").text in {f"{k}/4 converged" for k in range(5)}
    wait(browser, lambda d: len(grid(d)) == 4 and grid(d) != toggles)
    assert all(alt.startswith(canonical) for alt in grid(browser, "alt")), grid(browser, "alt")
    assert not browser.find_elements(By.CSS_SELECTOR, "#compare img")  # no per-attribute row for a query
    assert not browser.find_element(By.ID, "query-error").is_displayed()
    shot(browser, "2a-query")

    drawn = grid(browser)
    box.clear()
    box.send_keys("sneaker and (")
    browser.find_element(By.ID, "query-go").click()
    wait(browser, lambda d: d.find_element(By.ID, "query-error").is_displayed())
    message, where, mark = query_error(browser)
    assert message == "expected a name, '(' or 'not' at position 13, found the end of the query (422 invalid_query)"
    assert where.split("\n") == ["sneaker and ( ", " " * 13 + "^", "position 13: the end of the query"]
    assert mark == " "  # marked past the end: the query stopped too soon
    assert box.get_attribute("aria-invalid") == "true"
    assert not browser.find_element(By.ID, "query-result").is_displayed()
    assert grid(browser) == drawn  # the last good draw stays
    shot(browser, "2b-query-error")

    for typed, expected, at in (
        ("bag or not hat", "unknown attribute 'hat' at position 11", 11),
        ("bag & sandal", "invalid character '&' at position 4", 4),
    ):
        box.clear()
        box.send_keys(typed, Keys.ENTER)
        message = wait(browser, lambda d, e=expected: query_error(d)[0] if e in query_error(d)[0] else None)
        _, where, mark = query_error(browser)
        assert where.split("\n") == [typed, " " * at + "^", f'position {at}: character "{typed[at]}"'], where
        assert mark == typed[at], message

    browser.find_element(By.ID, "s-sandal-on").click()  # a toggle hands the grid back to the toggles
    wait(browser, lambda d: grid(d, "alt") == ["sandal"] * 4)
    assert not browser.find_element(By.ID, "query-error").is_displayed()
    assert browser.find_element(By.ID, "query").get_attribute("aria-invalid") is None
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert all("422" in m for m in severe), severe  # only the refused queries, no script error


def test_upload_and_edit_round_trip(server, browser, tmp_path):
    browser.get(server.url + "/")
    wait(browser, lambda d: len(grid(d)) == 8)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 40, (28, 28), dtype=np.uint8)
    pixels[4:8, 4:10] = 230
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "mine.png")
    assert not browser.find_element(By.ID, "edit-result").is_displayed()  # no empty placeholders before an edit
    browser.find_element(By.ID, "edit-file").send_keys(str(tmp_path / "mine.png"))
    browser.find_element(By.ID, "e-bag-on").click()
    browser.find_element(By.ID, "edit-go").click()
    wait(
        browser,
        lambda d: (d.find_element(By.ID, "edit-after").get_attribute("src") or "").startswith("data:image/png;base64,"),
    )
    assert browser.find_element(By.ID, "edit-result").is_displayed()
    assert browser.find_element(By.ID, "edit-before").get_attribute("src").startswith("blob:")
    assert browser.find_element(By.ID, "edit-recon").get_attribute("src").startswith("data:image/png;base64,")
    assert browser.find_element(By.ID, "edit-after-caption").text == "after: bag"
    assert not browser.find_element(By.ID, "edit-error").is_displayed()
    shot(browser, "3-edit")


def test_bad_admin_token_shows_the_error_and_the_right_one_registers(server, service_bundle, browser, tmp_path):
    browser.get(server.url + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sets-body tr")) == 3)
    art = tmp_path / "art"
    shutil.copytree(service_bundle / "labelsets" / "category", art)
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.ID, "reg-name").send_keys("classes")
    browser.find_element(By.ID, "reg-manifest").send_keys(str(art / "mapper.json"))
    browser.find_element(By.ID, "reg-weights").send_keys(str(art / "mapper.safetensors"))
    browser.find_element(By.ID, "reg-go").click()
    error = wait(
        browser,
        lambda d: d.find_element(By.ID, "admin-error") if d.find_element(By.ID, "admin-error").is_displayed() else None,
    )
    assert error.text == "the admin token is not this server's (401 unauthorized)"
    assert "classes" not in httpx.get(server.url + "/labelsets").text  # nothing was registered
    shot(browser, "4-bad-token")

    token = browser.find_element(By.ID, "token")
    token.clear()
    token.send_keys("web-token")
    browser.find_element(By.ID, "reg-go").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sets-body tr")) == 4)
    assert browser.find_element(By.ID, "admin-ok").text.startswith("registered classes, version ")
    assert not browser.find_element(By.ID, "admin-error").is_displayed()
    # the token is typed, never stored by the page
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert "web-token" not in browser.page_source
    shot(browser, "5-registered")


def test_training_job_from_the_page_shows_progress_and_serves(server, browser):
    browser.get(server.url + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sets-body tr")) >= 2)
    before = len(browser.find_elements(By.CSS_SELECTOR, "#sets-body tr"))
    browser.find_element(By.ID, "token").send_keys("web-token")
    browser.find_element(By.ID, "job-name").send_keys("bright-web")
    browser.find_element(By.CSS_SELECTOR, "#job-rule option[value='bright']").click()
    steps = browser.find_element(By.ID, "job-steps")
    steps.clear()
    steps.send_keys("20")
    browser.find_element(By.ID, "job-go").click()
    wait(browser, lambda d: "succeeded" in d.find_element(By.ID, "job-state").text, timeout=240)
    assert browser.execute_script("const p = document.getElementById('job-progress'); return [p.value, p.max]") == [
        20,
        20,
    ]
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sets-body tr")) == before + 1)
    assert "bright-web" in [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#labelset option")
    ]
    shot(browser, "6-trained")


def test_page_assets_are_served_by_the_app(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("static/app.js", "static/style.css"):
        r = httpx.get(f"{server.url}/{asset}")
        assert r.status_code == 200 and "https://" not in r.text
    assert httpx.get(server.url + "/static/missing.js").json()["error"]["code"] == "not_found"
