"""The web page in a real headless Chromium against a real server on 127.0.0.1.

Screenshots at desktop and phone width go to test-output/screenshots/ for a person to look at.
"""

import contextlib
import io
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.live import ROOT

pytestmark = pytest.mark.browser
SHOTS = ROOT / "test-output" / "screenshots"


def _chromium() -> tuple[str, str]:
    """Chromium and its driver: $CHROMIUM and $CHROMEDRIVER, else whatever PATH finds."""
    browser = os.environ.get("CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "Chromium or chromedriver not found on PATH: apt-get install chromium "
            "chromium-driver (scripts/test.sh does), or set CHROMIUM and CHROMEDRIVER"
        )
    return browser, driver


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def _browser(javascript: bool = True, width: int = 1280, height: int = 900, phone: bool = False):
    binary, chromedriver = _chromium()
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    if phone:  # a real phone viewport (headless windows cannot be narrower than 500 px)
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": True}},
        )
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    driver.profile_dir = profile
    return driver


@pytest.fixture(scope="module")
def browser():
    """One browser for the module's tests; each starts from a fresh page load."""
    driver = _browser()
    yield driver
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def _digit_file(tmp_path: Path, img: np.ndarray, name: str = "digit.png") -> Path:
    path = tmp_path / name
    # Black on white and larger, as a user's file would be.
    Image.fromarray(255 - img).resize((140, 140), Image.Resampling.BICUBIC).save(path)
    return path


def _number_file(tmp_path: Path, digits: list[np.ndarray], name: str = "number.png") -> Path:
    """MNIST digits side by side with a gap, black on white and larger, as a photo of a
    written number would be once cropped."""
    gap = np.zeros((28, 6), np.uint8)
    row = np.hstack([part for d in digits for part in (d, gap)][:-1])
    path = tmp_path / name
    h, w = row.shape
    Image.fromarray(255 - row).resize((w * 5, h * 5), Image.Resampling.BICUBIC).save(path)
    return path


# The page re-renders its result after each read (a drawing is read again after every
# stroke): an element found a moment ago may be gone when it is read, so waits look again.
RENDERED = (StaleElementReferenceException,)


def _wait_for_number(driver, expected: str, timeout: float = 15) -> str:
    """The number shown once it is `expected`, or the last one shown after `timeout` (a
    drawing is read a moment after each stroke: on a busy machine, before its last one too)."""
    seen = ""

    def shown(d) -> bool:
        nonlocal seen
        found = d.find_elements(By.ID, "answer-number")
        seen = found[0].text if found and found[0].is_displayed() else seen
        return seen == expected

    with contextlib.suppress(TimeoutException):
        WebDriverWait(driver, timeout, ignored_exceptions=RENDERED).until(shown)
    return seen


def _pad_is_blank(driver) -> bool:
    """Every pixel of the drawing pad is white paper."""
    return driver.execute_script(
        """
        const pad = document.getElementById("pad");
        const data = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
        return data.every(v => v === 255);
        """
    )


def _wait_for_answer(driver, timeout: float = 15) -> str:
    def shown(d) -> str | bool:
        found = d.find_elements(By.ID, "answer-digit")
        return found[0].text if found and found[0].is_displayed() else False

    return WebDriverWait(driver, timeout, ignored_exceptions=RENDERED).until(shown)


def _shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_upload_an_mnist_digit_and_read_it_on_the_page(server, browser, mnist_test, tmp_path):
    images, labels = mnist_test
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(_digit_file(tmp_path, images[0])))
    assert _wait_for_answer(browser) == str(labels[0])
    votes = browser.find_elements(By.CSS_SELECTOR, ".model-vote")
    assert [v.text for v in votes] == [str(labels[0])] * 3
    assert "agree" in browser.find_element(By.ID, "agreement").text
    seen = browser.find_element(By.CSS_SELECTOR, ".seen img")
    assert seen.get_attribute("src").startswith("data:image/png;base64,")
    _shot(browser, "desktop-upload")


def _stroke(driver, canvas, points: list[tuple[float, float]], kind: str = "mouse") -> None:
    """Draws through `points`, given as fractions of the canvas size, with one pointer."""
    w, h = canvas.size["width"], canvas.size["height"]
    builder = ActionBuilder(driver, mouse=PointerInput(kind, kind))
    pointer = builder.pointer_action
    x0, y0 = points[0]
    pointer.move_to(canvas, int((x0 - 0.5) * w), int((y0 - 0.5) * h))
    pointer.pointer_down()
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        for t in np.linspace(0.125, 1, 8):  # a hand moves through, not jumps to, each point
            x, y = xa + t * (xb - xa), ya + t * (yb - ya)
            pointer.move_to(canvas, int((x - 0.5) * w), int((y - 0.5) * h))
    pointer.pointer_up()
    builder.perform()


@pytest.mark.parametrize("kind", ["mouse", "touch", "pen"])
def test_draw_a_one_with_any_pointer_and_read_it_with_three_votes(server, browser, kind):
    browser.get(server.url + "/")
    canvas = browser.find_element(By.ID, "pad")
    _stroke(browser, canvas, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)], kind=kind)
    assert _wait_for_answer(browser) == "1"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".model-vote")) == 3


def test_draw_a_seven_in_two_strokes(server, browser):
    browser.get(server.url + "/")
    canvas = browser.find_element(By.ID, "pad")
    _stroke(browser, canvas, [(0.25, 0.2), (0.5, 0.2), (0.75, 0.2)])
    _stroke(browser, canvas, [(0.75, 0.2), (0.6, 0.5), (0.45, 0.85)])
    assert _wait_for_answer(browser) == "7"
    _shot(browser, "desktop-drawn-seven")
    browser.find_element(By.ID, "clear").click()
    browser.find_element(By.ID, "recognise-drawing").click()
    alert = WebDriverWait(browser, 5).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".error"))
    )
    assert "Nothing drawn" in alert.text


# A 1 and a 7 side by side, each about as wide as it is drawn in a square, in the wide pad.
ONE = [[(0.3, 0.15), (0.3, 0.5), (0.3, 0.85)]]
SEVEN = [[(0.55, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.68, 0.5), (0.6, 0.85)]]


def _draw_seventeen(server, browser) -> None:
    """The page, a 1 and a 7 drawn on its pad, and the number read."""
    browser.get(server.url + "/")
    canvas = browser.find_element(By.ID, "pad")
    for stroke in ONE + SEVEN:
        _stroke(browser, canvas, stroke)
    assert _wait_for_number(browser, "17") == "17"


def test_draw_a_two_digit_number_and_see_the_number_its_boxes_and_each_vote(server, browser):
    _draw_seventeen(server, browser)
    assert "number" in browser.find_element(By.ID, "mode-used").text
    # Each digit's box over the drawing as it was sent, left to right, with its reading.
    marks = browser.find_elements(By.CSS_SELECTOR, "#upload-preview svg rect.digit-mark")
    assert len(marks) == 2
    xs = [float(m.get_attribute("x")) for m in marks]
    # The pad is 560 canvas pixels wide: the 1 at 30 % of it, the 7 from 55 to 75 %.
    assert xs[0] < 0.3 * 560 < xs[1] < 0.6 * 560
    tags = browser.find_elements(By.CSS_SELECTOR, "#upload-preview svg text.digit-tag")
    assert [t.text for t in tags] == ["1", "7"]
    # Each digit's vote: its label and the three models' votes.
    cards = browser.find_elements(By.CSS_SELECTOR, ".digit-card")
    assert [c.find_element(By.CSS_SELECTOR, ".card-label").text for c in cards] == ["1", "7"]
    for card, label in zip(cards, "17", strict=True):
        votes = card.find_elements(By.CSS_SELECTOR, ".card-votes .model-vote")
        assert [v.text for v in votes] == [label] * 3
        assert "3/3 models" in card.find_element(By.CSS_SELECTOR, ".card-agreement").text
    _shot(browser, "desktop-drawn-number")


def test_the_mode_switch_reads_the_same_drawing_again_as_one_digit(server, browser):
    _draw_seventeen(server, browser)
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=digit]").click()
    WebDriverWait(browser, 15, ignored_exceptions=RENDERED).until(
        lambda d: "one digit" in d.find_element(By.ID, "mode-used").text
    )
    assert browser.find_elements(By.ID, "answer-number") == []
    assert len(browser.find_elements(By.CSS_SELECTOR, ".model-vote")) == 3


def test_hint_on_the_empty_pad_goes_with_the_first_stroke(server, browser):
    browser.get(server.url + "/")
    hint = browser.find_element(By.ID, "pad-hint")
    assert hint.is_displayed() and "number" in hint.text
    _shot(browser, "desktop-empty")
    canvas = browser.find_element(By.ID, "pad")
    # The hint is not ink: the pad under it is blank paper.
    assert _pad_is_blank(browser)
    _stroke(browser, canvas, ONE[0])
    assert not hint.is_displayed()
    browser.find_element(By.ID, "clear").click()
    assert hint.is_displayed()


def test_uploading_a_file_clears_the_drawing_and_shows_the_file_beside_its_result(
    server, browser, mnist_test, tmp_path
):
    images, labels = mnist_test
    browser.get(server.url + "/")
    canvas = browser.find_element(By.ID, "pad")
    _stroke(browser, canvas, ONE[0])
    assert not _pad_is_blank(browser)
    path = _number_file(tmp_path, [images[0], images[1]])
    browser.find_element(By.ID, "file").send_keys(str(path))
    expected = f"{labels[0]}{labels[1]}"
    assert _wait_for_number(browser, expected) == expected
    assert _pad_is_blank(browser)
    assert browser.find_element(By.ID, "pad-hint").is_displayed()
    # The file itself under its digits' boxes.
    preview = browser.find_element(By.CSS_SELECTOR, "#upload-preview svg image")
    assert preview.get_attribute("href").startswith("data:image/png;base64,")
    width, height = Image.open(path).size
    assert f"{width}\u00d7{height}" in browser.find_element(By.ID, "upload-preview").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#upload-preview rect.digit-mark")) == 2
    _shot(browser, "desktop-uploaded-number")
    # Drawing after an upload: the file chosen before is no longer the input.
    _stroke(browser, canvas, ONE[0])
    assert browser.find_element(By.ID, "file").get_attribute("value") == ""


def test_a_photo_is_previewed_beside_its_digit(server, browser):
    browser.get(server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=digit]").click()
    browser.find_element(By.ID, "file").send_keys(str(ROOT / "examples" / "photo-5.jpg"))
    assert _wait_for_answer(browser) == "5"
    preview = browser.find_element(By.CSS_SELECTOR, "#upload-preview img")
    assert preview.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert "640\u00d7480" in browser.find_element(By.ID, "upload-preview").text
    # The browser decoded it: the preview is the photo, not a broken image.
    assert browser.execute_script("return arguments[0].naturalWidth", preview) > 0
    _shot(browser, "desktop-uploaded-photo")


def test_the_api_page_lists_predict_and_its_number_mode_and_loads_nothing_external(server, browser):
    browser.get(server.url + "/")
    browser.find_element(By.LINK_TEXT, "API").click()
    WebDriverWait(browser, 10).until(ec.url_to_be(server.url + "/docs"))
    heads = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".op h3")]
    assert "POST /predict" in heads
    predict = browser.find_element(By.ID, "POST-predict")
    params = [c.text for c in predict.find_elements(By.CSS_SELECTOR, "tbody td:first-child")]
    assert "mode" in params and "include_image" in params
    assert "number" in predict.find_element(By.CSS_SELECTOR, "tbody").text
    commands = predict.find_element(By.CSS_SELECTOR, "pre.curl").text
    assert f"{server.url}/predict?mode=number" in commands
    assert "no_ink" in predict.text and "415" in predict.text
    # Served from this server alone: every resource the browser fetched, and every element
    # that would fetch one.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and all(u.startswith(server.url) for u in urls)
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src], link[href]'))"
        ".map(e => e.src || e.href)"
    )
    assert sources and all(u.startswith((server.url, "data:")) for u in sources), sources
    _shot(browser, "desktop-api-page")
    with _emulating(browser, *PHONE) as driver:
        driver.get(server.url + "/docs")
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0  # long commands and URLs wrap on a phone's screen
        driver.execute_script("document.getElementById('POST-predict').scrollIntoView()")
        _shot(driver, "phone-api-page")


def test_a_text_file_gets_a_plain_error(server, browser, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("this is not an image\n")
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    alert = WebDriverWait(browser, 10).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".error"))
    )
    assert "not an image in an accepted format" in alert.text
    _shot(browser, "desktop-error")


@contextlib.contextmanager
def _emulating(driver, *commands: tuple[str, dict, str, dict]):
    """Chromium's DevTools emulation (no JavaScript, a phone's screen) for one test, on the
    module's one browser: each (command, arguments, undo command, its arguments)."""
    for command, args, _, _ in commands:
        driver.execute_cdp_cmd(command, args)
    try:
        yield driver
    finally:
        for _, _, undo, args in reversed(commands):
            driver.execute_cdp_cmd(undo, args)


def test_form_works_without_javascript(server, browser, mnist_test, tmp_path):
    images, labels = mnist_test
    off = ("Emulation.setScriptExecutionDisabled", {"value": True})
    on = ("Emulation.setScriptExecutionDisabled", {"value": False})
    with _emulating(browser, (*off, *on)) as driver:
        driver.get(server.url + "/")
        # app.js shows the drawing panel: hidden, it did not run.
        assert not driver.find_element(By.ID, "draw-panel").is_displayed()
        driver.find_element(By.ID, "file").send_keys(str(_digit_file(tmp_path, images[1])))
        driver.find_element(By.ID, "upload-button").click()
        assert _wait_for_answer(driver) == str(labels[1])
        assert len(driver.find_elements(By.CSS_SELECTOR, ".model-vote")) == 3
        _shot(driver, "desktop-no-javascript")


def test_a_number_through_the_form_without_javascript(server, browser, mnist_test, tmp_path):
    images, labels = mnist_test
    off = ("Emulation.setScriptExecutionDisabled", {"value": True})
    on = ("Emulation.setScriptExecutionDisabled", {"value": False})
    digits = [images[i] for i in (4, 5, 6)]
    with _emulating(browser, (*off, *on)) as driver:
        driver.get(server.url + "/")
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=number]").click()
        driver.find_element(By.ID, "file").send_keys(str(_number_file(tmp_path, digits)))
        driver.find_element(By.ID, "upload-button").click()
        expected = "".join(str(labels[i]) for i in (4, 5, 6))
        assert _wait_for_number(driver, expected) == expected
        assert len(driver.find_elements(By.CSS_SELECTOR, "#upload-preview rect.digit-mark")) == 3
        assert len(driver.find_elements(By.CSS_SELECTOR, ".digit-card")) == 3
        # The page that answered keeps the mode that was asked for.
        assert driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=number]").is_selected()


PHONE = (
    (
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
        "Emulation.clearDeviceMetricsOverride",
        {},
    ),
    (
        "Emulation.setTouchEmulationEnabled",
        {"enabled": True},
        "Emulation.setTouchEmulationEnabled",
        {"enabled": False},
    ),
)


def test_phone_width_layout_fits_and_works(server, browser, mnist_test, tmp_path):
    images, labels = mnist_test
    with _emulating(browser, *PHONE) as driver:
        driver.get(server.url + "/")
        assert driver.execute_script("return window.innerWidth") == 390
        _shot(driver, "phone-empty")
        driver.find_element(By.ID, "file").send_keys(str(_digit_file(tmp_path, images[2])))
        assert _wait_for_answer(driver) == str(labels[2])
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0  # nothing wider than the phone's screen
        # The result is below the inputs on a phone: the page scrolls it into view.
        WebDriverWait(driver, 5).until(
            lambda d: d.execute_script(
                "const r = document.getElementById('answer-digit').getBoundingClientRect();"
                "return r.top >= 0 && r.bottom <= window.innerHeight;"
            )
        )
        _shot(driver, "phone-result")


def test_page_is_keyboard_reachable_and_loads_nothing_external(server, browser):
    browser.get_log("browser")  # the earlier tests' messages: this test judges its own page's
    browser.get(server.url + "/")
    reached = set()
    for _ in range(12):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        reached.add(active.get_attribute("id") or active.tag_name)
    assert {"file", "upload-button", "clear", "recognise-drawing", "pen"} <= reached
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and all(u.startswith(server.url) for u in urls)
    logs = browser.get_log("browser")
    assert not [entry for entry in logs if entry["level"] == "SEVERE"], logs


def test_paste_from_the_clipboard(server, browser, mnist_test):
    images, labels = mnist_test
    buf = io.BytesIO()
    Image.fromarray(255 - images[3]).save(buf, format="PNG")
    browser.get(server.url + "/")
    # A synthetic paste event carrying a PNG file, as the clipboard delivers a copied image.
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const file = new File([bytes], "pasted.png", {type: "image/png"});
        const data = new DataTransfer();
        data.items.add(file);
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data}));
        """,
        __import__("base64").b64encode(buf.getvalue()).decode(),
    )
    assert _wait_for_answer(browser) == str(labels[3])


def test_phone_width_draw_a_number_with_a_finger(server, browser):
    with _emulating(browser, *PHONE) as driver:
        driver.get(server.url + "/")
        canvas = driver.find_element(By.ID, "pad")
        # Wider than tall even on a phone: room for several digits side by side.
        assert canvas.size["width"] >= 1.9 * canvas.size["height"]
        for stroke in ONE + SEVEN:
            _stroke(driver, canvas, stroke, kind="touch")
        assert _wait_for_number(driver, "17") == "17"
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        driver.execute_script("document.getElementById('result').scrollIntoView()")
        _shot(driver, "phone-drawn-number")
